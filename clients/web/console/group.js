// @ts-check
// The group pages: 充值, 充值查询, 额度充值, 额度充值查询.

import { call, describe, startFlow, forgetFlow, followRun } from '../lib/rpc.js';
import { $, download, el } from '../lib/dom.js';
import { yuan } from '../lib/money.js';
import { rules, vocab } from '../lib/vocab.js';
import {
  me,
  router,
  REFUND_NOTE,
  groupRuleLines,
  state,
  closeDialog,
  confirmBox,
  alertBox,
  progressBox,
  errorBox,
  when,
  table,
  fields,
  field,
  readerSelect,
} from './ui.js';
import { promptAnswer, showRunOutcome } from './etc.js';
import { refreshCard } from './readers.js';

/** @typedef {import('../types/rpc').Preset} Preset */
/** @typedef {import('../lib/vocab.js').GroupRules} GroupRules */
/** @typedef {import('../types/rpc').GroupInfo} GroupInfo */
/** @typedef {import('./ui.js').CardSummary} CardSummary */

// ---- group pages ---------------------------------------------------------------------------

/**
 * The group's name, operator and available quota, shown in `box`; resolves with them.
 * @param {HTMLElement} box
 * @returns {Promise<GroupInfo | null>}
 */
export async function groupHeader(box) {
  try {
    const g = await call('group.info', {});
    box.replaceChildren(
      fields(
        [
          ['集团名称', g.group_name],
          ['集团操作员', g.operator_name || g.operator],
          ['终端编号', g.terminal_no],
          ['集团可用额度', yuan(g.available_quota)],
        ],
        'group-info',
      ),
    );
    return g;
  } catch (err) {
    errorBox(err, '无法读取集团信息');
    return null;
  }
}

// The most this card can take now: a multiple of the step within the card's balance ceiling
// and the group's quota (null when the card, the quota or the rules are not known yet).
/**
 * @param {CardSummary | null} card
 * @param {GroupInfo | null} info
 * @returns {number | null}
 */
export function groupMaxFen(card, info) {
  if (
    !rules.group ||
    !card ||
    card.kind !== 'city' ||
    card.balance_fen === null ||
    card.balance_fen === undefined
  )
    return null;
  let max = rules.group.card_balance_max_fen - card.balance_fen;
  if (info) max = Math.min(max, info.available_quota_fen);
  return Math.max(0, max - (max % rules.group.step_fen));
}

/** @param {HTMLElement} main */
export function pageGroupRecharge(main) {
  const head = el('div', { id: 'group-head' });
  const reader = readerSelect(
    'gr-reader',
    (r) => r.id.includes('city') || /城市|city/i.test(r.name),
  );
  const cardBox = el('div', { id: 'gr-card' });
  const amount = el('input', {
    id: 'gr-amount',
    inputmode: 'numeric',
    placeholder: rules.group ? rules.group.step_yuan + ' 的整数倍' : '',
  });
  const quick = el('div', { class: 'quick', id: 'gr-quick' });
  const limit = el('p', { class: 'hint', id: 'gr-limit' });
  const submit = el('button', { type: 'submit', id: 'gr-submit', text: '确认充值' });
  const out = el('div', { id: 'gr-result' });
  const form = el('form', { class: 'form', id: 'gr-form' });
  main.append(
    head,
    el('h2', { text: '待充值卡片' }),
    el(
      'div',
      { class: 'toolbar' },
      field('读卡器', reader),
      el('button', {
        type: 'button',
        class: 'secondary',
        id: 'gr-read',
        text: '读卡',
        onclick: () => readCard(),
      }),
    ),
    cardBox,
    form,
    out,
  );
  /** @type {GroupInfo | null} */
  let info = null;
  /** @type {CardSummary | null} */
  let card = null;
  // What this card may take, said before the operator types an amount.
  const showLimit = () => {
    const max = groupMaxFen(card, info);
    if (max === null) {
      limit.textContent = '请在读卡器上放置要充值的城市一卡通卡片。';
      return;
    }
    const r = /** @type {GroupRules} */ (rules.group);
    const ceiling = '充值后卡内金额不能超' + r.card_balance_max_yuan + '元';
    limit.textContent =
      max >= r.min_fen
        ? '本卡本次最多可充 ' +
          max / 100 +
          ' 元（卡内余额 ' +
          /** @type {CardSummary} */ (card).balance +
          ' 元，' +
          ceiling +
          (info ? '；集团可用额度 ' + info.available_quota + ' 元' : '') +
          '）。'
        : '本卡暂不能充值：卡内余额 ' +
          /** @type {CardSummary} */ (card).balance +
          ' 元，' +
          ceiling +
          (info && info.available_quota_fen < r.min_fen
            ? '，或集团可用额度不足' + r.min_yuan + '元'
            : '') +
          '。';
  };
  // Each read, and each card taken away, is a new generation: an answer that arrives after a
  // newer one started (the card was taken away meanwhile) is dropped, never shown.
  let generation = 0;
  const readCard = async () => {
    const mine = ++generation;
    try {
      const read = await call('card.summary', { reader_id: reader.value });
      if (mine !== generation) return;
      card = read;
      if (card.kind !== 'city') {
        cardBox.replaceChildren(
          el('p', {
            class: 'error',
            id: 'gr-wrong-card',
            text:
              '本页面为城市一卡通充值：读卡器上的卡片（' +
              (card.kind_label || '未知卡片') +
              '，卡号 ' +
              card.card_number +
              '）不是城市一卡通，请放置要充值的城市一卡通卡片。',
          }),
        );
      } else {
        cardBox.replaceChildren(
          fields(
            [
              ['卡号', card.card_number],
              ['卡片类型', card.kind_label],
              ['卡内余额', yuan(card.balance)],
            ],
            'gr-card-fields',
          ),
        );
      }
    } catch (err) {
      if (mine !== generation) return;
      card = null;
      // No card is not an error on this page: the same hint as when a card is taken away.
      cardBox.replaceChildren(
        err.name === 'NoCard'
          ? noCard()
          : el('p', { class: 'error', text: describe(err).message + ' ' + describe(err).action }),
      );
    }
    showLimit();
  };
  const noCard = () =>
    el('p', {
      class: 'hint',
      id: 'gr-no-card',
      text: '读卡器上没有卡片：请放置要充值的城市一卡通卡片。',
    });
  reader.addEventListener('change', () => {
    card = null;
    cardBox.replaceChildren();
    readCard();
  });
  // A card placed on or taken from this reader is read again while the form is open (the
  // listener ends with the page).
  /** @param {Event} e */
  const onReader = (e) => {
    if (!cardBox.isConnected) {
      document.removeEventListener('cardd-reader-event', onReader);
      return;
    }
    const ev = /** @type {CustomEvent} */ (e).detail || {};
    if (ev.reader_id !== reader.value || form.hidden) return;
    if (ev.type === 'card_inserted' || ev.type === 'load_resolved') readCard();
    if (ev.type === 'card_removed') {
      generation += 1;
      card = null;
      cardBox.replaceChildren(noCard());
      showLimit();
    }
  };
  document.addEventListener('cardd-reader-event', onReader);
  groupHeader(head).then((g) => {
    info = g;
    for (const p of (rules.group && rules.group.presets) || []) {
      const whole = String(Number(p.amount));
      quick.appendChild(
        el('button', {
          type: 'button',
          class: 'secondary',
          'data-amount': whole,
          text: p.label,
          onclick: () => {
            amount.value = whole;
          },
        }),
      );
    }
    showLimit();
  });
  readCard();
  // The rules come first: the operator reads them before typing an amount.
  form.append(
    el(
      'div',
      { class: 'rules', id: 'gr-rules' },
      el('h3', { text: '充值规则' }),
      el(
        'ul',
        {},
        groupRuleLines().map((r) => el('li', { text: r })),
      ),
    ),
    limit,
    field('充值金额（元）', amount),
    quick,
    submit,
  );
  form.addEventListener('submit', async (/** @type {Event} */ e) => {
    e.preventDefault();
    const text = amount.value.trim();
    const problem = groupAmountProblem(text, card, info);
    if (problem) {
      alertBox(
        problem,
        '请修改充值金额',
        el(
          'ul',
          {},
          groupRuleLines().map((r) => el('li', { text: r })),
        ),
      );
      return;
    }
    const slot = 'group.recharge:' + (card ? card.card_number : '') + ':' + text;
    progressBox('正在读取卡片……');
    let run;
    try {
      run = await startFlow(
        slot,
        'group.recharge',
        { amount: text + '.00', card_number: card ? card.card_number : undefined },
        reader.value,
      );
      run = await followRun(run.run_id, {
        progress: (m) => progressBox(m),
        prompt: async (p) => {
          const a = await promptAnswer(p);
          progressBox('正在充值……');
          return a;
        },
      });
    } catch (err) {
      await errorBox(err, '充值未完成');
      return;
    }
    forgetFlow(slot);
    closeDialog(null);
    // What the group.recharge flow returns.
    const r = /** @type {any} */ (run.result);
    if (run.state !== 'succeeded' || (r && r.status !== 'ok')) {
      if (run.state === 'succeeded')
        alertBox(r.message, r.status === 'unknown' ? '充值结果待确认' : '充值');
      else showRunOutcome(run, '充值');
      return;
    }
    out.replaceChildren(
      el(
        'section',
        { class: 'panel success', id: 'gr-success' },
        el('h2', { text: r.message || '充值成功！' }),
        fields(
          [
            ['订单编号', r.order_id],
            ['卡号', r.card_number],
            ['充值前余额', yuan(r.balance_before)],
            ['充值金额', yuan(r.amount)],
            ['现余额', yuan(r.balance_after)],
            ['充值前集团额度', yuan(r.quota_before)],
            ['充值后集团额度', yuan(r.quota_after)],
          ],
          'gr-success-fields',
        ),
        el('p', { class: 'hint', text: REFUND_NOTE }),
        el(
          'div',
          { class: 'buttons' },
          el('button', {
            type: 'button',
            id: 'gr-again',
            text: '继续充值',
            onclick: () => router.route(),
          }),
        ),
      ),
    );
    form.hidden = true;
    groupHeader(head);
    refreshCard(reader.value);
    const again = $('gr-again');
    if (again) again.focus();
  });
}

// Why an amount breaks the seed's rules (checked again by cardd), or null.
/**
 * @param {string} text
 * @param {CardSummary | null} card
 * @param {GroupInfo | null} info
 * @returns {string | null}
 */
export function groupAmountProblem(text, card, info) {
  if (!/^\d+$/.test(text)) return '充值金额应为整数元，例如 50。';
  const fen = Number(text) * 100;
  if (card && card.kind !== 'city')
    return '本页面为城市一卡通充值：读卡器上的卡片不是城市一卡通，请放置要充值的城市一卡通卡片。';
  const r = rules.group;
  if (!r) return '无法读取充值规则，请刷新页面后重试。';
  if (fen < r.min_fen) return '充值金额不能小于' + r.min_yuan + '元。';
  if (fen % r.step_fen !== 0)
    return '充值金额必须是' + r.step_yuan + '元的整数倍，' + text + ' 元不是。';
  const max = groupMaxFen(card, info);
  if (
    fen > r.card_balance_max_fen ||
    (card && /** @type {number} */ (card.balance_fen) + fen > r.card_balance_max_fen)
  ) {
    return (
      '充值金额过大：充值后卡内金额不能超' +
      r.card_balance_max_yuan +
      '元' +
      (card
        ? '。卡内余额 ' + card.balance + ' 元，本卡本次最多可充 ' + Number(max) / 100 + ' 元。'
        : '。')
    );
  }
  if (info && fen > info.available_quota_fen)
    return (
      '集团可用额度不足：可用额度 ' +
      info.available_quota +
      ' 元' +
      (max !== null ? '，本卡本次最多可充 ' + max / 100 + ' 元。' : '。')
    );
  return null;
}

// 充值查询 (orders) and 额度充值查询 (topups): a period by dates or preset, statistics, export.
/**
 * @param {HTMLElement} main
 * @param {string} kind
 */
export function pageGroupQuery(main, kind) {
  /** @type {'group.orders' | 'group.topups'} */
  const method = kind === 'orders' ? 'group.orders' : 'group.topups';
  const start = el('input', { id: 'gq-start', type: 'date' });
  const end = el('input', { id: 'gq-end', type: 'date' });
  const out = el('div', { id: 'gq-result' });
  /** @type {Preset | null} */
  let preset = 'last_7_days';
  // Typed dates win over a preset: a start alone is from that day until today, an end alone
  // up to that day (cardd takes the longest period it allows), both a range; none 最近7天.
  /** @returns {import('../types/rpc').Params<'group.orders'>} */
  const period = () => {
    if (start.value || end.value) {
      /** @type {import('../types/rpc').Params<'group.orders'>} */
      const p = {};
      if (start.value) p.start_date = start.value;
      if (end.value) p.end_date = end.value;
      return p;
    }
    return { preset: preset || 'last_7_days' };
  };
  // Why the typed dates cannot be queried, or null.
  const periodProblem = () =>
    start.value && end.value && start.value > end.value
      ? '开始日期 ' + start.value + ' 晚于结束日期 ' + end.value + '，请重新选择。'
      : null;
  const presets = el(
    'div',
    { class: 'presets' },
    vocab.query_periods.map(({ code, label }) =>
      el('button', {
        type: 'button',
        class: 'secondary',
        'data-preset': code,
        text: label,
        onclick: (/** @type {Event} */ e) => {
          preset = /** @type {Preset} */ (code);
          start.value = '';
          end.value = '';
          markPreset(e.target);
          query();
        },
      }),
    ),
  );
  /** @param {EventTarget | null} b */
  const markPreset = (b) => {
    for (const x of presets.children) x.classList.toggle('active', x === b);
  };
  for (const i of [start, end])
    i.addEventListener('change', () => {
      preset = null;
      markPreset(null);
    });
  const query = async () => {
    const problem = periodProblem();
    if (problem) {
      out.replaceChildren();
      alertBox(problem, '请修改查询日期');
      return;
    }
    try {
      const r = await call(method, period());
      const any = /** @type {any} */ (r);
      out.replaceChildren(kind === 'orders' ? ordersView(any) : topupsView(any));
    } catch (err) {
      out.replaceChildren();
      errorBox(err, '查询失败');
    }
  };
  /** @param {import('../types/rpc').Params<'group.orders.export'>['format']} format */
  const exporter = (format) => async () => {
    const problem = periodProblem();
    if (problem) {
      alertBox(problem, '请修改查询日期');
      return;
    }
    try {
      const r = await call(
        /** @type {'group.orders.export' | 'group.topups.export'} */ (method + '.export'),
        { ...period(), format },
      );
      download(r.filename, r.content_type, r.data_base64);
      $('gq-exported').textContent = '已导出 ' + r.rows + ' 条记录：' + r.filename;
    } catch (err) {
      errorBox(err, '导出失败');
    }
  };
  main.append(
    el(
      'form',
      {
        class: 'toolbar',
        onsubmit: (/** @type {Event} */ e) => {
          e.preventDefault();
          query();
        },
      },
      field('开始日期', start),
      field('结束日期', end),
      el('button', { type: 'submit', id: 'gq-query', text: '查询' }),
      presets,
    ),
    el('p', {
      class: 'hint',
      id: 'gq-period-rule',
      text: '只填开始日期：查询该日至今天；只填结束日期：查询截至该日（最长366天）；都不填：最近7天。开始日期不能晚于结束日期。',
    }),
    el(
      'div',
      { class: 'toolbar' },
      el('button', {
        type: 'button',
        id: 'gq-export-csv',
        class: 'secondary',
        text: '导出 CSV',
        onclick: exporter('csv'),
      }),
      el('button', {
        type: 'button',
        id: 'gq-export-xlsx',
        class: 'secondary',
        text: '导出 Excel',
        onclick: exporter('xlsx'),
      }),
      el('span', { id: 'gq-exported', class: 'hint' }),
    ),
    out,
  );
  markPreset(presets.children[0]);
  query();
}

/** @param {{ group_name?: string | null, period: import('../types/rpc').PeriodView }} r */
export function periodLine(r) {
  return el('p', {
    class: 'hint',
    text: (r.group_name || '') + '　查询期间：' + r.period.start_date + ' 至 ' + r.period.end_date,
  });
}

/** @param {import('../types/rpc').Result<'group.orders'>} r */
export function ordersView(r) {
  const s = r.stats || {};
  return el(
    'div',
    {},
    periodLine(r),
    fields(
      [
        ['充值成功笔数', s.success_count],
        ['充值成功金额', yuan(s.success_amount)],
        ['充值失败笔数', s.failure_count],
        ['充值失败金额', yuan(s.failure_amount)],
        ['已退款笔数', s.refunded_count],
        ['已退款金额', yuan(s.refunded_amount)],
        ['充值中笔数', s.in_progress_count],
        ['结果待确认笔数', s.pending_count],
        ['结果待确认金额', yuan(s.pending_amount)],
      ],
      'gq-stats',
    ),
    (r.rows || []).length === 0
      ? el('p', { class: 'empty', text: '该期间没有充值记录。' })
      : table(
          [
            ['订单编号', (x) => x.order_id],
            ['卡号', (x) => x.card_number],
            ['充值前余额', (x) => yuan(x.balance_before)],
            ['充值金额', (x) => yuan(x.amount)],
            ['现余额', (x) => yuan(x.balance_after)],
            ['充值前集团额度', (x) => yuan(x.quota_before)],
            ['充值后集团额度', (x) => yuan(x.quota_after)],
            ['状态', (x) => x.status_label],
            ['操作员', (x) => x.operator_name || x.operator],
            ['充值时间', (x) => when(x.created_at)],
            ['备注', (x) => x.remark],
          ],
          r.rows,
          'gq-table',
        ),
  );
}

/** @param {import('../types/rpc').Result<'group.topups'>} r */
export function topupsView(r) {
  const s = r.stats || {};
  return el(
    'div',
    {},
    periodLine(r),
    fields(
      [
        ['转账成功笔数', s.transfer_success_count],
        ['转账成功金额', yuan(s.transfer_success_amount)],
        ['审核笔数', s.audited_count],
        ['审核金额', yuan(s.audited_amount)],
      ],
      'gq-stats',
    ),
    (r.rows || []).length === 0
      ? el('p', { class: 'empty', text: '该期间没有额度充值记录。' })
      : table(
          [
            ['订单编号', (x) => x.topup_id],
            ['转账金额', (x) => yuan(x.amount)],
            ['银行返回流水号', (x) => x.bank_serial],
            ['备注', (x) => x.remark],
            ['状态', (x) => x.status_label],
            ['操作员', (x) => x.operator_name || x.operator],
            ['审核员', (x) => x.auditor_name || x.auditor],
            ['转账时间', (x) => when(x.created_at)],
          ],
          r.rows,
          'gq-table',
        ),
  );
}

// Where 额度充值 hands the transfer to the bank's pages (/bank) and where the bank hands the
// result back (sessionStorage: the same tab, nothing in the address).
export const BANK_TRANSFER_KEY = 'cardd.bank.transfer';
export const BANK_RESULT_KEY = 'cardd.bank.result';

/** @param {HTMLElement} main */
export function pageGroupTopUp(main) {
  const head = el('div', { id: 'group-head' });
  const amount = el('input', { id: 'gt-amount', inputmode: 'numeric', placeholder: '整数元' });
  const remark = el('input', { id: 'gt-remark', maxlength: '100' });
  const out = el('div', { id: 'gt-result' });
  /** @type {GroupInfo | null} */
  let info = null;
  const headed = groupHeader(head).then((g) => {
    info = g;
    return g;
  });
  const form = el(
    'form',
    { class: 'form', id: 'gt-form' },
    el('p', {
      class: 'hint',
      text: '转账金额不能小于0或带小数点。确认转账后将跳到网上支付页面（本机为模拟网上银行，不会发生真实扣款），支付成功后一卡通后台审核，审核通过后集团额度增加。',
    }),
    field('转账金额（元）', amount),
    field('备注', remark),
    el('button', { type: 'submit', id: 'gt-submit', text: '确认转账' }),
  );
  main.append(head, form, out);
  // 转账成功 (or what the bank answered): the seed's fields, then the audit to come.
  /** @param {import('../types/rpc').TopUpResult} r */
  const show = (r) => {
    const paid = r.status === 'paid' || r.status === 'approved';
    out.replaceChildren(
      el(
        'section',
        { class: 'panel ' + (paid ? 'success' : ''), id: 'gt-success' },
        el('h2', { text: paid && r.status === 'paid' ? '转账成功' : r.message || r.status_label }),
        fields(
          [
            ['订单编号', r.topup_id],
            ['充值转账金额', yuan(r.amount)],
            ['银行返回流水号', r.bank_serial],
            ['集团名称', r.group_name],
            ['操作员', r.operator === me().username ? me().display_name || r.operator : r.operator],
            ['状态', r.status_label],
          ],
          'gt-fields',
        ),
        el('p', { class: 'hint', text: '特别说明：转账成功后，一卡通操作员会进行后续审核工作。' }),
        el(
          'div',
          { class: 'buttons' },
          r.status === 'unknown' || r.status === 'pending'
            ? el('button', {
                type: 'button',
                class: 'secondary',
                text: '查询银行结果',
                onclick: async () => {
                  try {
                    show(await call('group.topup_status', { topup_id: r.topup_id }));
                  } catch (err) {
                    errorBox(err, '查询失败');
                  }
                },
              })
            : null,
          el('button', {
            type: 'button',
            id: 'gt-again',
            class: 'secondary',
            text: '继续转账',
            onclick: () => router.route(),
          }),
        ),
      ),
    );
  };
  // Back from the bank: the transfer's result.
  const back = sessionStorage.getItem(BANK_RESULT_KEY);
  if (back) {
    sessionStorage.removeItem(BANK_RESULT_KEY);
    form.hidden = true;
    headed
      .then(() => call('group.topup_status', { topup_id: back }))
      .then(show, (err) => {
        form.hidden = false;
        errorBox(err, '查询失败');
      });
  }
  form.addEventListener('submit', async (/** @type {Event} */ e) => {
    e.preventDefault();
    const text = amount.value.trim();
    if (!/^[1-9]\d*$/.test(text)) {
      alertBox('转账金额应为大于0的整数元，不能带小数点。', '请修改转账金额');
      return;
    }
    const sure = await confirmBox(
      '转账金额：' + text + '元。备注：' + (remark.value.trim() || '无') + '。确认转账？',
    );
    if (!sure) return;
    // The bank's pages take it from here; nothing is paid until 确认支付 there.
    sessionStorage.setItem(
      BANK_TRANSFER_KEY,
      JSON.stringify({
        amount: text,
        remark: remark.value.trim(),
        group_name: info ? info.group_name : '',
        operator: info ? info.operator_name || info.operator : me().display_name || me().username,
      }),
    );
    location.href = '/bank';
  });
}
