// @ts-check
// The sandbox bank's payment pages for 额度充值: the steps of the seed's online banking
// (choose the payment method and account, 手机短信验证 with the SMS code and the trade password,
// 确认支付, 支付成功, back after 7 seconds or 点击此处). It is cardd's embedded sandbox bank:
// nothing real is charged. The transfer comes from the console in sessionStorage (the same tab);
// 确认支付 sends it with group.topup, which pays through the daemon's payment gateway; the
// result goes back to the console's 额度充值 page, where the top-up waits for 一卡通后台审核.

import { call, describe } from './lib/rpc.js';
import { $, allOf, el } from './lib/dom.js';

const TRANSFER_KEY = 'cardd.bank.transfer';
const RESULT_KEY = 'cardd.bank.result';
const CONSOLE = '/#/group-topup';
/// Seconds before 支付成功 returns to the console by itself (the seed's 7 seconds).
const RETURN_SECONDS = 7;
/** @type {Record<string, string>} */
const METHODS = { corporate: '企业网上银行', personal: '个人网上银行', quick: '银行卡快捷支付' };

/**
 * What the console's 额度充值 page hands over.
 * @typedef {{ amount: string, remark?: string, group_name?: string, operator?: string }} Transfer
 */
/** @type {Transfer | null} */
let transfer = null;
try {
  transfer = JSON.parse(sessionStorage.getItem(TRANSFER_KEY) || 'null');
} catch (e) {
  transfer = null;
}
let account = '';
let method = 'corporate';
let smsCode = '';

/** @param {string} step */
function show(step) {
  document.body.dataset.step = step;
  for (const s of allOf('.step')) s.hidden = s.id !== 'step-' + step;
  /** @type {Record<string, number>} */
  const order = { pay: 0, sms: 1, paying: 1, done: 2 };
  for (const li of /** @type {HTMLCollectionOf<HTMLElement>} */ ($('bank-steps').children))
    li.classList.toggle('current', order[li.dataset.for || ''] === order[step]);
}

/**
 * @param {HTMLElement} box
 * @param {[string, unknown][]} pairs
 */
function fields(box, pairs) {
  box.replaceChildren(
    ...pairs.flatMap(([k, v]) => [
      el('dt', { text: k }),
      el('dd', { text: v === null || v === undefined || v === '' ? '—' : String(v) }),
    ]),
  );
}

const masked = (/** @type {string} */ a) =>
  a.length > 8 ? a.slice(0, 4) + ' **** ' + a.slice(-4) : a;
const money = (/** @type {string} */ text) => text + '.00 元';

/** @param {string | null} topupId */
function backToConsole(topupId) {
  if (topupId) sessionStorage.setItem(RESULT_KEY, topupId);
  location.href = CONSOLE;
}

$('none-back').addEventListener('click', () => backToConsole(null));
$('pay-cancel').addEventListener('click', () => {
  sessionStorage.removeItem(TRANSFER_KEY);
  backToConsole(null);
});
$('sms-back').addEventListener('click', () => show('pay'));
// A message about what was typed goes away when it is typed again.
for (const [input, error] of [
  ['pay-account', 'pay-error'],
  ['sms-code', 'sms-error'],
  ['sms-password', 'sms-error'],
]) {
  $(input).addEventListener('input', () => {
    $(error).textContent = '';
  });
}

if (!transfer || !/^[1-9]\d*$/.test(String(transfer.amount || ''))) {
  $('bank-order').hidden = true;
  show('none');
} else {
  openOrder(transfer);
}

/**
 * The order's steps: 选择支付方式, 手机短信验证, 支付成功.
 * @param {Transfer} transfer
 */
function openOrder(transfer) {
  const orderBox = el('dl', { class: 'fields', id: 'bank-order-fields' });
  $('bank-order').append(el('h2', { text: '订单信息' }), orderBox);
  fields(orderBox, [
    ['收款方', '城市一卡通（一卡通账户）'],
    ['付款单位', transfer.group_name],
    ['转账金额', money(transfer.amount)],
    ['备注', transfer.remark || '无'],
    ['操作员', transfer.operator],
  ]);
  show('pay');
  $('pay-account').focus();

  $('step-pay').addEventListener('submit', (e) => {
    e.preventDefault();
    account = $('pay-account', HTMLInputElement).value.replace(/\s+/g, '');
    const checked = /** @type {HTMLInputElement | null} */ (
      document.querySelector('input[name=method]:checked')
    );
    method = (checked && checked.value) || 'corporate';
    if (!/^\d{16,19}$/.test(account)) {
      $('pay-error').textContent = '付款账号应为16至19位数字，请重新输入。';
      return;
    }
    $('pay-error').textContent = '';
    const digits = new Uint32Array(1);
    crypto.getRandomValues(digits);
    smsCode = String(digits[0] % 1000000).padStart(6, '0');
    $('sms-sent').textContent =
      '已向账户 ' +
      masked(account) +
      '（' +
      METHODS[method] +
      '）预留的手机号 138****0000 发送短信验证码，请输入验证码和交易密码。';
    $('sms-sandbox').textContent =
      '模拟短信：您的验证码为 ' + smsCode + '，本次转账 ' + money(transfer.amount) + '。';
    $('sms-code', HTMLInputElement).value = '';
    $('sms-password', HTMLInputElement).value = '';
    $('sms-error').textContent = '';
    show('sms');
    $('sms-code').focus();
  });

  $('step-sms').addEventListener('submit', async (e) => {
    e.preventDefault();
    if ($('sms-code', HTMLInputElement).value.trim() !== smsCode) {
      $('sms-error').textContent = '短信验证码不正确，请重新输入。';
      return;
    }
    if (!/^\d{6}$/.test($('sms-password', HTMLInputElement).value)) {
      $('sms-error').textContent = '交易密码应为6位数字，请重新输入。';
      return;
    }
    // From here the transfer is sent once: it leaves the page's storage before the call.
    sessionStorage.removeItem(TRANSFER_KEY);
    show('paying');
    let result = null;
    let failure = null;
    try {
      result = await call('group.topup', {
        amount: transfer.amount,
        remark: transfer.remark || '',
      });
    } catch (err) {
      failure = err;
    }
    done(result, failure);
  });

  /**
   * @param {import('./types/rpc').Result<'group.topup'> | null} result
   * @param {any} failure
   */
  function done(result, failure) {
    const box = $('step-done');
    let topupId = result ? result.topup_id : null;
    if (result) {
      box.className = 'step ok';
      $('done-title').textContent = '支付成功';
      $('done-message').textContent =
        '已从付款账户 ' +
        masked(account) +
        ' 转出 ' +
        result.amount +
        ' 元至一卡通账户（模拟网上银行，不会发生真实扣款）。';
      fields($('done-fields'), [
        ['订单编号', result.topup_id],
        ['支付方式', METHODS[method]],
        ['付款账号', masked(account)],
        ['支付金额', result.amount + ' 元'],
        ['银行返回流水号', result.bank_serial],
      ]);
    } else {
      const detail = (failure && failure.data && failure.data.detail) || {};
      topupId = detail.topup_id || null;
      const unknown = failure && failure.name === 'PaymentUnknown';
      box.className = 'step bad';
      $('done-title').textContent = unknown ? '支付结果未知' : '支付失败';
      const { message, action } = describe(failure);
      $('done-message').textContent = message + (action ? ' ' + action : '');
      fields($('done-fields'), [
        ['订单编号', topupId],
        ['支付方式', METHODS[method]],
        ['付款账号', masked(account)],
        ['支付金额', money(transfer.amount)],
      ]);
    }
    show('done');
    let left = RETURN_SECONDS;
    $('done-seconds').textContent = String(left);
    $('done-back').addEventListener('click', (e) => {
      e.preventDefault();
      backToConsole(topupId);
    });
    const timer = setInterval(() => {
      left -= 1;
      $('done-seconds').textContent = String(Math.max(left, 0));
      if (left <= 0) {
        clearInterval(timer);
        backToConsole(topupId);
      }
    }, 1000);
  }
}
