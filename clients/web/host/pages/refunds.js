// @ts-check
// 退款审核 (auditors): failed group recharges, each with the card evidence of the host's
// ledger. 退款 is offered only when the evidence says the money is not on the card,
// 改为充值成功 only when the card's TAC proved it is; otherwise neither, and why.

import { el } from '../../lib/dom.js';
import { yuan } from '../../lib/money.js';
import { call } from '../rpc.js';
import { alertBox, askText, errorBox, fields, fill, when } from '../ui.js';

/** @typedef {import('../api').FailedOrder} FailedOrder */

/** What the evidence's verdict is called. */
const VERDICTS = {
  landed: '已圈存（金额在卡内）',
  not_landed: '未圈存（金额未进入卡内）',
  unknown: '结果未知',
};

/** What the host's authorisation state is called. */
const STATES = {
  booked: '已核验交易验证码（TAC）',
  released: '卡片证明未圈存',
  authorized: '已授权，等待卡片结果',
  reconcile: '待核对',
  none: '后台未发出圈存授权',
};

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'refunds',
  title: '退款审核',
  method: 'refunds.pending',
  render(main) {
    const out = el('div', { id: 'refunds-result' });
    main.append(
      el('p', {
        class: 'hint',
        text: '充值失败（待退款）的集团充值订单。系统根据后台数据中卡片的圈存证据判断：金额已在卡内的不能退款，只能改为充值成功；判定未圈存的人不能审核同一笔退款。',
      }),
      out,
    );
    /**
     * @param {FailedOrder} o
     * @param {'refunds.refund' | 'refunds.resolve'} method
     * @param {string} label
     */
    const decide = (o, method, label) => async () => {
      const reason = await askText(
        label + '：订单 ' + o.order_id + '，卡号 ' + o.card_number + '，金额 ' + yuan(o.amount),
        '审核意见',
      );
      if (!reason) return;
      try {
        const r = await call(method, { order_id: o.order_id, reason });
        await alertBox(
          label + '已完成：订单现为“' + r.status_label + '”。',
          '退款审核',
        );
      } catch (err) {
        await errorBox(err, label + '未完成');
      }
      load();
    };
    /** @param {FailedOrder} o */
    const card = (o) => {
      const e = o.evidence;
      return el(
        'div',
        { class: 'evidence-card', id: 'order-' + o.order_id, 'data-verdict': e.verdict },
        el(
          'h3',
          {},
          '订单 ' + o.order_id + ' ',
          el('span', { class: 'verdict ' + e.verdict, text: VERDICTS[e.verdict] }),
        ),
        el('p', { class: 'evidence-message', text: e.message }),
        fields([
          ['集团', o.group_id + ' ' + (o.group_name || '')],
          ['卡号', o.card_number],
          ['充值金额', yuan(o.amount)],
          ['订单状态', o.status_label],
          ['失败原因', o.failure],
          ['操作员', o.operator],
          ['充值时间', when(o.created_at)],
          ['圈存站点', e.site_id],
          ['后台证据', STATES[e.state]],
          ['授权时间', when(e.authorized_at)],
          ['结果时间', when(e.settled_at)],
          ['交易验证码（TAC）', e.tac],
          ['充值前余额', e.balance_before === null ? null : yuan(e.balance_before)],
          ['充值后余额', e.balance_after === null ? null : yuan(e.balance_after)],
          ['判定未圈存的人', e.declared_by.join('、')],
        ]),
        el(
          'div',
          { class: 'row-actions' },
          o.may_refund
            ? el('button', {
                type: 'button',
                class: 'refund',
                text: '退款',
                onclick: decide(o, 'refunds.refund', '退款'),
              })
            : null,
          o.may_resolve
            ? el('button', {
                type: 'button',
                class: 'resolve',
                text: '改为充值成功',
                onclick: decide(o, 'refunds.resolve', '改为充值成功'),
              })
            : null,
          !o.may_refund && o.refund_refusal
            ? el('p', { class: 'hint no-refund', text: o.refund_refusal })
            : null,
        ),
      );
    };
    const load = () =>
      fill(
        out,
        () => call('refunds.pending', {}),
        (rows) =>
          rows.length === 0
            ? el('p', { class: 'empty', text: '没有待审核的退款。' })
            : el('div', {}, rows.map(card)),
      );
    load();
  },
};
