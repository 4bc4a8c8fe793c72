// @ts-check
// 额度充值审核 (auditors): paid top-ups, 通过 (the group's quota grows) or 驳回, with 审核意见.

import { el } from '../../lib/dom.js';
import { yuan } from '../../lib/money.js';
import { call } from '../rpc.js';
import { alertBox, askText, errorBox, fill, table, when } from '../ui.js';

/** @typedef {import('../api').PendingTopUp} PendingTopUp */

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'topups',
  title: '额度充值审核',
  method: 'topups.pending',
  render(main) {
    const out = el('div', { id: 'topups-result' });
    main.append(
      el('p', {
        class: 'hint',
        text: '银行已付款的集团额度充值（转账成功，待审核）：审核通过后集团可用额度增加，驳回则额度不变；每笔只能审核一次。',
      }),
      out,
    );
    /**
     * @param {PendingTopUp} t
     * @param {boolean} approve
     */
    const decide = (t, approve) => async () => {
      const reason = await askText(
        (approve ? '通过' : '驳回') +
          '集团 ' +
          (t.group_name || t.group_id) +
          ' 的额度充值 ' +
          t.topup_id +
          '（' +
          yuan(t.amount) +
          '）' +
          (approve ? '' : '，请写明驳回原因'),
        '审核意见',
      );
      if (reason === null) return;
      if (!approve && !reason) {
        await alertBox('驳回时请填写审核意见。', '额度充值审核');
        return;
      }
      try {
        const r = await call('topups.audit', { topup_id: t.topup_id, approve, reason });
        await alertBox(
          approve
            ? '审核通过，集团可用额度现为 ' + yuan(r.available) + '。'
            : '已驳回，集团额度不变。',
          '额度充值审核',
        );
      } catch (err) {
        await errorBox(err, '审核未完成');
      }
      load();
    };
    const load = () =>
      fill(
        out,
        () => call('topups.pending', {}),
        (rows) =>
          rows.length === 0
            ? el('p', { class: 'empty', text: '没有待审核的额度充值。' })
            : table(
                [
                  ['集团', (t) => t.group_id + ' ' + (t.group_name || '')],
                  ['订单编号', (t) => t.topup_id],
                  ['转账金额', (t) => yuan(t.amount)],
                  ['当前可用额度', (t) => yuan(t.available)],
                  ['银行返回流水号', (t) => t.bank_serial],
                  ['备注', (t) => t.remark],
                  ['操作员', (t) => t.operator],
                  ['转账时间', (t) => when(t.created_at)],
                  [
                    '审核',
                    (t) =>
                      el(
                        'span',
                        { class: 'row-actions' },
                        el('button', {
                          type: 'button',
                          class: 'approve',
                          'data-topup': t.topup_id,
                          text: '通过',
                          onclick: decide(t, true),
                        }),
                        el('button', {
                          type: 'button',
                          class: 'secondary reject',
                          'data-topup': t.topup_id,
                          text: '驳回',
                          onclick: decide(t, false),
                        }),
                      ),
                  ],
                ],
                rows,
                'topups-table',
              ),
      );
    load();
  },
};
