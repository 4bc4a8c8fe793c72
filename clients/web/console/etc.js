// @ts-check
// The ETC counter pages: 充值记录 and its details, 圈存, 修改圈存状态, 充值, OBU发行, other flows, 读卡.

import { ApiError, call, startFlow, forgetFlow, followRun } from '../lib/rpc.js';
import { $, el } from '../lib/dom.js';
import { yuan } from '../lib/money.js';
import { vocab } from '../lib/vocab.js';
import {
  state,
  dialog,
  closeDialog,
  confirmBox,
  alertBox,
  progressBox,
  errorBox,
  askText,
  when,
  table,
  fields,
  field,
  colourSelect,
  isEtcReader,
  readerSelect,
  role,
} from './ui.js';
import { refreshCard } from './readers.js';

/** @typedef {import('../types/rpc').RecordView} RecordView */

// ---- ETC: 充值记录, details, 圈存, 修改圈存状态 -----------------------------------------------

export const mayLoad = () => ['teller', 'supervisor'].includes(role());

/** @param {HTMLElement} main */
export function pageRecords(main) {
  const plate = el('input', {
    id: 'rec-plate',
    maxlength: '16',
    placeholder: '如 陕A12345',
    required: true,
  });
  const colour = colourSelect('rec-colour');
  const from = el('input', { id: 'rec-from', type: 'date' });
  const to = el('input', { id: 'rec-to', type: 'date' });
  const reader = readerSelect('rec-reader', isEtcReader);
  const results = el('div', { id: 'rec-results' });
  const details = el('div', { id: 'rec-details' });
  let page = 1;
  const search = async () => {
    if (!plate.value.trim()) {
      plate.focus();
      return;
    }
    if (from.value && to.value && from.value > to.value) {
      results.replaceChildren();
      alertBox(
        '充值开始日期（' + from.value + '）晚于充值结束日期（' + to.value + '），请重新选择时间。',
        '请修改查询时间',
      );
      return;
    }
    /** @type {import('../types/rpc').Params<'etc.records.query'>} */
    const params = {
      plate: plate.value.trim(),
      plate_colour: Number(colour.value),
      page,
      page_size: 20,
    };
    if (from.value) params.from = from.value;
    if (to.value) params.to = to.value;
    try {
      const r = await call('etc.records.query', params);
      results.replaceChildren(
        recordsTable(r, (/** @type {number} */ n) => {
          page = n;
          search();
        }),
      );
    } catch (err) {
      results.replaceChildren();
      errorBox(err, '查询失败');
    }
  };
  const form = el(
    'form',
    {
      class: 'toolbar',
      id: 'rec-form',
      onsubmit: (/** @type {Event} */ e) => {
        e.preventDefault();
        page = 1;
        details.replaceChildren();
        search();
      },
    },
    field('车牌号', plate),
    field('车牌颜色', colour),
    field('充值开始日期', from),
    field('充值结束日期', to),
    el('button', { type: 'submit', id: 'rec-query', text: '查询' }),
  );
  main.append(
    form,
    el('div', { class: 'toolbar' }, field('读卡器（圈存、核对卡片）', reader)),
    results,
    details,
  );

  /**
   * @param {import('../types/rpc').RecordPage} r
   * @param {(page: number) => void} goto
   */
  function recordsTable(r, goto) {
    const rows = r.records || [];
    if (rows.length === 0) return el('p', { class: 'empty', text: '没有符合条件的充值记录。' });
    /** @param {RecordView} rec */
    const actions = (rec) =>
      el(
        'span',
        { class: 'row-actions' },
        el('button', {
          type: 'button',
          class: 'link',
          text: '详情',
          'data-action': 'details',
          onclick: () => showDetails(rec.record_id),
        }),
        rec.status === 'not_loaded' && mayLoad()
          ? el('button', {
              type: 'button',
              text: '圈存',
              'data-action': 'load',
              onclick: () => doLoad(rec.record_id),
            })
          : null,
      );
    const grid = table(
      [
        // Narrow enough for 1024 px: plate and colour share a column, amounts carry their unit
        // in the heading, 充值渠道 is in the details.
        ['记录编号', (x) => x.record_id],
        ['用户卡卡号', (x) => x.card_number],
        ['车牌号（车牌颜色）', (x) => x.plate + '（' + x.plate_colour_label + '）'],
        ['充值前金额（元）', (x) => x.balance_before],
        ['充值金额（元）', (x) => x.amount],
        ['充值后金额（元）', (x) => x.balance_after],
        ['充值时间', (x) => when(x.recharged_at)],
        ['充值状态', (x) => el('span', { class: 'status ' + x.status, text: x.status_label })],
        ['操作', actions],
      ],
      rows,
      'rec-table',
    );
    for (const [i, tr] of [...grid.tBodies[0].rows].entries())
      tr.dataset.record = rows[i].record_id;
    const pages = Math.max(1, Math.ceil(r.total / r.page_size));
    const pager = el(
      'div',
      { class: 'pager' },
      '共 ' + r.total + ' 条，第 ' + r.page + '/' + pages + ' 页 ',
      r.page > 1
        ? el('button', {
            type: 'button',
            class: 'secondary',
            text: '上一页',
            onclick: () => goto(r.page - 1),
          })
        : null,
      r.page < pages
        ? el('button', {
            type: 'button',
            class: 'secondary',
            text: '下一页',
            onclick: () => goto(r.page + 1),
          })
        : null,
    );
    return el('div', {}, grid, pager);
  }

  /** @param {string} recordId */
  async function showDetails(recordId) {
    let rec;
    try {
      rec = await call('etc.records.get', { record_id: recordId });
    } catch (err) {
      errorBox(err, '无法读取充值记录');
      return;
    }
    const history = table(
      [
        ['时间', (h) => when(h.at)],
        ['操作', (h) => h.action_label],
        ['原状态', (h) => h.from_label],
        ['新状态', (h) => h.to_label],
        ['操作员', (h) => h.operator_name || h.operator],
        ['原因', (h) => h.reason],
        ['交易编号', (h) => h.txn_id],
      ],
      rec.history || [],
      'rec-history',
    );
    const buttons = el(
      'div',
      { class: 'buttons-left' },
      rec.status === 'not_loaded' && mayLoad()
        ? el('button', {
            type: 'button',
            id: 'det-load',
            text: '圈存',
            onclick: () => doLoad(rec.record_id),
          })
        : null,
      rec.status !== 'not_loaded' && mayLoad()
        ? el('button', {
            type: 'button',
            id: 'det-unload',
            class: 'warn',
            text: '未圈存',
            onclick: () => markNotLoaded(rec),
          })
        : null,
      el('button', {
        type: 'button',
        id: 'det-evidence',
        class: 'secondary',
        text: '卡片证据',
        onclick: () => showEvidence(rec),
      }),
    );
    details.replaceChildren(
      el(
        'section',
        { class: 'panel', id: 'record-panel', 'data-record': rec.record_id },
        el('h2', { text: '充值记录详情' }),
        el('p', {
          class: 'hint',
          text: '请仔细核对车辆信息、卡上的余额以及充值后的金额和圈存状态。',
        }),
        fields(
          [
            ['记录编号', rec.record_id],
            ['用户卡卡号', rec.card_number],
            ['车牌号', rec.plate],
            ['车牌颜色', rec.plate_colour_label],
            ['充值前的金额', yuan(rec.balance_before)],
            ['充值金额', yuan(rec.amount)],
            ['充值后的金额', yuan(rec.balance_after)],
            ['充值时间', when(rec.recharged_at)],
            ['充值渠道', rec.channel],
            ['充值状态', rec.status_label],
            ['圈存时间', when(rec.loaded_at)],
          ],
          'rec-fields',
        ),
        buttons,
        el('h3', { text: '处理记录' }),
        history,
      ),
    );
    details.scrollIntoView();
  }

  /** @param {string} recordId */
  async function doLoad(recordId) {
    const readerId = reader.value;
    const slot = 'etc.load:' + recordId;
    progressBox('正在查询充值记录……');
    let run;
    try {
      run = await startFlow(slot, 'etc.load', { record_id: recordId }, readerId);
      run = await followRun(run.run_id, {
        progress: (m) => progressBox(m),
        prompt: async (p) => {
          const answer = await promptAnswer(p);
          progressBox('正在处理……');
          return answer;
        },
      });
    } catch (err) {
      await errorBox(err, '圈存未完成');
      return;
    }
    forgetFlow(slot);
    await showRunOutcome(run, '圈存');
    refreshCard(readerId);
    search();
    showDetails(recordId);
  }

  // 修改圈存状态: the seed's question, then the daemon decides from the card on the reader. A
  // supervisor whom the card cannot prove right is asked for a reason and the call repeated.
  /** @param {RecordView} rec */
  async function markNotLoaded(rec) {
    const sure = await confirmBox('确定将充值记录改为【未圈存】的状态吗？');
    if (!sure) return;
    /** @type {import('../types/rpc').Params<'etc.records.mark_not_loaded'>} */
    const params = { record_id: rec.record_id, reader_id: reader.value };
    /** @param {any} evidence the error's `data.detail.evidence` */
    const evidenceBox = (evidence) =>
      evidence
        ? el(
            'div',
            { class: 'evidence', id: 'evidence' },
            el('h3', { text: '读卡核对结果' + (evidence.card_checked ? '' : '（未读卡）') }),
            el('p', { text: evidence.explanation }),
            evidence.card_balance
              ? el('p', { text: '卡内余额：' + yuan(evidence.card_balance) })
              : null,
          )
        : null;
    for (;;) {
      try {
        await call('etc.records.mark_not_loaded', params);
        await alertBox('修改圈存状态成功！请进行圈存操作', '修改圈存状态');
        break;
      } catch (err) {
        const detail = (err.data && err.data.detail) || {};
        const evidence = detail.evidence;
        // No card on the reader: a supervisor may go on without it (the daemon then asks
        // for a reason); a teller puts the card on the reader.
        if (err.name === 'NoCard' && role() === 'supervisor' && params.reader_id) {
          const without = await confirmBox(
            '读卡器上没有该记录的卡片。不读卡，由主管核对后填写原因修改圈存状态吗？',
            '没有卡片',
          );
          if (!without) break;
          delete params.reader_id;
          continue;
        }
        if (err.name === 'CardEvidenceRequired' && detail.reason_required && !params.reason) {
          const reason = await askText(
            (evidence ? evidence.explanation + '。' : '卡片不能证明该笔圈存未写入。') +
              '请填写修改原因。',
            '修改原因',
          );
          if (!reason) break;
          params.reason = reason;
          continue;
        }
        let message = null;
        let action = null;
        if (err.name === 'LoadLanded') message = '不能改为未圈存：读卡核对结果如下。';
        if (err.name === 'CardEvidenceRequired' && evidence && evidence.card_checked) {
          message = '不能改为未圈存：卡片不能证明该笔圈存未写入。';
          action = '请主管核对卡片余额和交易记录后填写原因办理。';
        }
        await errorBox(err, '不能修改圈存状态', evidenceBox(evidence), message, action);
        break;
      }
    }
    search();
    showDetails(rec.record_id);
  }

  /** @param {RecordView} rec */
  async function showEvidence(rec) {
    try {
      const r = await call('etc.records.evidence', {
        record_id: rec.record_id,
        reader_id: reader.value,
      });
      const ev = r.evidence;
      const verdict =
        { landed: '已写入卡内', not_landed: '未写入卡内', unknown: '无法确定' }[ev.verdict] ||
        ev.verdict;
      await alertBox(
        ev.explanation,
        '卡片证据：' + verdict,
        fields([
          ['卡内余额', yuan(ev.card_balance)],
          ['已读卡核对', ev.card_checked ? '是' : '否'],
        ]),
      );
    } catch (err) {
      await errorBox(err, '无法读取卡片证据');
    }
  }
}

// A flow's question as a dialog: confirm → true/false; choose → one of the choices.
/**
 * @param {import('../lib/rpc.js').Prompt} p
 * @returns {Promise<any>}
 */
export async function promptAnswer(p) {
  if (p.kind === 'choose') {
    const list = el('div', { class: 'choices' });
    const value = dialog({
      title: '请选择',
      message: p.message,
      body: list,
      buttons: [['取消', null, 'secondary']],
    });
    for (const c of p.choices)
      list.appendChild(
        el('button', { type: 'button', class: 'choice', text: c, onclick: () => closeDialog(c) }),
      );
    const chosen = await value;
    if (chosen === null) throw new ApiError(0, '已取消', { error: 'Cancelled' });
    return chosen;
  }
  return confirmBox(p.message, '请确认');
}

// The end of a run: the flow's message with its figures, or its failure with what to do.
/**
 * @param {import('../lib/rpc.js').Run} run
 * @param {string} what the business, as the titles name it
 */
export async function showRunOutcome(run, what) {
  if (run.state === 'succeeded') {
    // What the flow returns: its own figures.
    const r = /** @type {any} */ (run.result || {});
    /** @type {[string, unknown][]} */
    const all = [
      ['订单编号', r.order_id],
      ['卡号', r.card_number],
      ['车牌号', r.plate],
      [
        '圈存前余额',
        r.balance_before !== undefined && what === '圈存' ? yuan(r.balance_before) : undefined,
      ],
      ['圈存金额', r.amount !== undefined && what === '圈存' ? yuan(r.amount) : undefined],
      [
        '圈存后余额',
        r.balance_after !== undefined && what === '圈存' ? yuan(r.balance_after) : undefined,
      ],
      ['交易验证码', r.tac],
    ];
    const pairs = all.filter(([, v]) => v !== undefined && v !== null);
    return alertBox(
      r.message || what + '成功！',
      what + '结果',
      pairs.length ? fields(pairs, 'run-result') : null,
    );
  }
  const failure = run.failure || { message: '业务未完成' };
  const loads = run.state === 'interrupted' && Array.isArray(run.loads) ? run.loads : [];
  /** @type {Record<string, string>} */
  const outcomeZh = { credited: '已写入卡内', not_credited: '未写入卡内', unknown: '结果待确认' };
  const unknown = loads.some((l) => l.outcome === 'unknown');
  const action =
    run.state !== 'interrupted'
      ? '请按提示处理后重新办理；如卡片在办理中被移开，请将同一张卡片放回读卡器，系统会先核对卡片，不会重复圈存。'
      : unknown
        ? '请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值。'
        : loads.some((l) => l.outcome === 'credited')
          ? '服务曾中断，但圈存已写入卡内，请勿重复充值。'
          : '服务曾中断：请将同一张卡片放回读卡器后重新查询记录，系统会按卡片核对结果，不会重复圈存。';
  /** @type {HTMLElement[]} */
  const body = [el('p', { class: 'action', text: '处理方法：' + action })];
  loads.forEach((l, i) =>
    body.push(
      fields(
        /** @type {[string, unknown][]} */ ([
          ['圈存交易', l.txn_id],
          ['卡号', l.card_number],
          ['圈存金额', yuan(l.amount)],
          ['圈存结果', outcomeZh[l.outcome] || l.outcome],
          ['圈存后余额', l.balance_after ? yuan(l.balance_after) : undefined],
          ['交易验证码', l.tac],
        ]).filter(([, v]) => v !== undefined && v !== null),
        'run-load-' + (i + 1),
      ),
    ),
  );
  return dialog({
    title: what + '未完成',
    message: failure.message,
    body: el('div', {}, body),
    buttons: [['确定', true]],
  });
}

// ---- ETC: 充值 (a payment into a vehicle account) ----------------------------------------

/** @param {HTMLElement} main */
export function pageEtcRecharge(main) {
  const plate = el('input', { id: 'rc-plate', maxlength: '16', required: true });
  const colour = colourSelect('rc-colour');
  const amount = el('input', {
    id: 'rc-amount',
    inputmode: 'decimal',
    required: true,
    placeholder: '如 200.00',
  });
  const channel = el(
    'select',
    { id: 'rc-channel' },
    ['银行柜台', '网上银行', '手机银行'].map((c) => el('option', { value: c, text: c })),
  );
  const out = el('div', { id: 'rc-result' });
  main.append(
    el('p', {
      class: 'hint',
      text: '用户付款后在此登记充值，生成一条【未圈存】的充值记录；用户卡到读卡器上后在【充值记录】中圈存。',
    }),
    el(
      'form',
      {
        class: 'form',
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          if (!/^\d+(\.\d{1,2})?$/.test(amount.value.trim())) {
            alertBox('充值金额应为元，最多两位小数，例如 200.00。', '金额格式不对');
            return;
          }
          const sure = await confirmBox(
            '车牌号：' +
              plate.value.trim() +
              '（' +
              colour.selectedOptions[0].text +
              '）。充值金额：' +
              amount.value.trim() +
              '元。确认充值？',
          );
          if (!sure) return;
          try {
            const r = await call('etc.recharge', {
              plate: plate.value.trim(),
              plate_colour: Number(colour.value),
              amount: amount.value.trim(),
              channel: channel.value,
            });
            out.replaceChildren(
              el(
                'section',
                { class: 'panel' },
                el('h2', { text: '充值成功' }),
                fields([
                  ['记录编号', r.record_id],
                  ['用户卡卡号', r.card_number],
                  ['充值金额', yuan(r.amount)],
                  ['充值状态', r.status_label],
                ]),
              ),
            );
          } catch (err) {
            errorBox(err, '充值未完成');
          }
        },
      },
      field('车牌号', plate),
      field('车牌颜色', colour),
      field('充值金额（元）', amount),
      field('充值渠道', channel),
      el('button', { type: 'submit', text: '确认充值' }),
    ),
    out,
  );
}

// ---- flows by their parameter schema (OBU发行, other flows) --------------------------------

/**
 * A form for `flow` from its parameter schema; `done(run)` with the finished run.
 * @param {import('./ui.js').FlowInfo} flow
 * @param {(r: import('./ui.js').Reader) => boolean} readerPrefer
 * @param {(run: import('../lib/rpc.js').Run) => void} [done]
 */
export function flowForm(flow, readerPrefer, done) {
  /** @type {any} */
  const schema = flow.params || {};
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  /** @type {Record<string, [HTMLInputElement | HTMLSelectElement, any]>} */
  const inputs = {};
  const form = el('form', { class: 'form', id: 'flow-form' });
  form.appendChild(el('p', { class: 'hint', text: flow.description || '' }));
  const reader = readerSelect('flow-reader', readerPrefer);
  form.appendChild(field('读卡器', reader));
  // Required parameters first (JSON Schema keeps no order); the optional ones folded away.
  const optional = el('div', { class: 'grid2' });
  for (const name of Object.keys(props)) {
    const p = props[name];
    let input;
    if (name === 'plate_colour') input = colourSelect('flow-' + name);
    else
      input = el('input', {
        id: 'flow-' + name,
        name,
        required: required.has(name),
        inputmode: p.type === 'integer' ? 'numeric' : null,
      });
    inputs[name] = [input, p];
    if (required.has(name)) form.appendChild(field(p.title || name, input));
    else optional.appendChild(field(p.title || name, input));
  }
  if (optional.children.length)
    form.appendChild(
      el('details', { id: 'flow-optional' }, el('summary', { text: '更多信息（选填）' }), optional),
    );
  form.appendChild(el('button', { type: 'submit', id: 'flow-start', text: '开始' + flow.title }));
  form.addEventListener('submit', async (/** @type {Event} */ e) => {
    e.preventDefault();
    /** @type {Record<string, unknown>} */
    const params = {};
    for (const [name, [input, p]] of Object.entries(inputs)) {
      const v = input.value.trim();
      if (v === '') continue;
      params[name] = p.type === 'integer' ? Number(v) : v;
    }
    const slot = flow.name + ':' + JSON.stringify(params);
    progressBox('正在' + flow.title + '……');
    let run;
    try {
      run = await startFlow(slot, flow.name, params, reader.value);
      run = await followRun(run.run_id, {
        progress: (m) => progressBox(m),
        prompt: async (p) => {
          const a = await promptAnswer(p);
          progressBox('正在处理……');
          return a;
        },
      });
    } catch (err) {
      await errorBox(err, flow.title + '未完成');
      return;
    }
    forgetFlow(slot);
    refreshCard(reader.value);
    if (done) {
      closeDialog(null);
      done(run);
    } else {
      showRunOutcome(run, flow.title);
    }
  });
  return form;
}

/** @param {HTMLElement} main */
export function pageObu(main) {
  const flow = state.flows.find((f) => f.name === 'obu.issue');
  const out = el('div', { id: 'obu-result' });
  main.append(
    flowForm(
      /** @type {import('./ui.js').FlowInfo} */ (flow),
      (r) => r.capabilities && r.capabilities.obu_channel,
      async (/** @type {import('../lib/rpc.js').Run} */ run) => {
        if (run.state !== 'succeeded') {
          showRunOutcome(run, 'OBU发行');
          return;
        }
        // What the obu.issue flow returns.
        const r = /** @type {any} */ (run.result || {});
        if (r.status !== 'ok') {
          alertBox(r.message || '已取消OBU发行', 'OBU发行');
          return;
        }
        const plan = r.plan || r;
        const vehicle = plan.vehicle || plan;
        const colour =
          vehicle.plate_colour && typeof vehicle.plate_colour === 'object'
            ? vehicle.plate_colour.label
            : vehicle.plate_colour_label;
        const list = (/** @type {unknown} */ v) => (Array.isArray(v) ? v.join('、') : v);
        out.replaceChildren(
          el(
            'section',
            { class: 'panel success', id: 'obu-success' },
            el('h2', { text: r.message || 'OBU发行成功！' }),
            fields(
              [
                ['OBU号', plan.obu_number],
                [
                  '车牌号',
                  vehicle.plate ? vehicle.plate + (colour ? '（' + colour + '）' : '') : null,
                ],
                ['车型', vehicle.vehicle_class_label],
                ['签约日期', r.signed_date],
                ['有效期至', r.expiry_date],
                ['已写入', list(r.written_labels)],
                [
                  '读回核对',
                  list(
                    (r.verified || []).map(
                      (/** @type {string} */ v) =>
                        /** @type {Record<string, string>} */ ({
                          system_info: '系统信息',
                          vehicle_info: '车辆信息',
                        })[v] || v,
                    ),
                  ) + '（逐字节一致）',
                ],
                ['激活状态', r.activated === undefined ? null : r.activated ? '已激活' : '未激活'],
              ],
              'obu-fields',
            ),
          ),
        );
        out.scrollIntoView();
      },
    ),
    out,
  );
}

// Flows a role may not start from this page: `card.load` credits a card with no payment
// behind it, so it is an administrator's test mode, and 圈存 at the counter goes through
// 充值记录 (`etc.load`, tied to the paid record).
/** @type {Record<string, string>} */
export const FLOW_TITLES = { 'card.load': '测试圈存（无资金来源）' };
/** @param {import('./ui.js').FlowInfo} f */
export const flowTitle = (f) => FLOW_TITLES[f.name] || f.title;
export const pageFlowList = () =>
  state.flows.filter(
    (f) => (f.name === 'card.load' ? role() === 'admin' : true) && f.name !== 'obu.issue',
  );

/** @param {HTMLElement} main */
export function pageFlows(main) {
  const list = el('div', { class: 'cards' });
  const host = el('div', { id: 'flow-host' });
  for (const f of pageFlowList()) {
    const flow = Object.assign({}, f, { title: flowTitle(f) });
    list.appendChild(
      el('button', {
        type: 'button',
        class: 'secondary',
        'data-flow': f.name,
        text: flow.title,
        onclick: () =>
          host.replaceChildren(
            el('h2', { text: flow.title }),
            flowForm(flow, () => false),
          ),
      }),
    );
  }
  main.append(list, host);
}

// ---- 读卡 ----------------------------------------------------------------------------------

/** @param {HTMLElement} main */
export function pageCard(main) {
  const reader = readerSelect('card-reader', mayLoad() ? isEtcReader : (r) => r.card_present);
  const out = el('div', { id: 'card-result' });
  const read = async () => {
    try {
      const c = await call('card.summary', { reader_id: reader.value });
      out.replaceChildren(
        fields(
          [
            ['卡片类型', c.kind_label],
            ['卡种', c.card_type],
            ['卡号', c.card_number],
            ['车牌号', c.plate],
            ['车牌颜色', c.plate_colour_label],
            ['卡内余额', yuan(c.balance)],
            ['启用日期', c.start_date],
            ['有效期至', c.expiry_date],
            ['说明', (c.notes || []).join('；')],
          ],
          'card-fields',
        ),
      );
    } catch (err) {
      out.replaceChildren();
      errorBox(err, '读卡失败');
    }
  };
  main.append(
    el(
      'div',
      { class: 'toolbar' },
      field('读卡器', reader),
      el('button', { type: 'button', id: 'card-read', text: '读卡', onclick: read }),
    ),
    out,
  );
}
