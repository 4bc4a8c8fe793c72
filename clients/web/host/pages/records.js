// @ts-check
// 充值记录 (every back-office role): a card's or a vehicle's recharge records as the host keeps
// them (根据后台数据), with 圈存状态, the site that loaded them and when.

import { $, el } from '../../lib/dom.js';
import { yuan } from '../../lib/money.js';
import { call } from '../rpc.js';
import { fill, table, when } from '../ui.js';

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'records',
  title: '充值记录',
  method: 'records.query',
  render(main) {
    const out = el('div', { id: 'records-result' });
    const card = el('input', { id: 'records-card', maxlength: '20', placeholder: '卡号' });
    const plate = el('input', { id: 'records-plate', maxlength: '16', placeholder: '车牌号' });
    const search = () => {
      const card_number = $('records-card', HTMLInputElement).value.trim();
      const plate_ = $('records-plate', HTMLInputElement).value.trim();
      fill(
        out,
        () => call('records.query', { card_number, plate: plate_ }),
        (r) =>
          r.records.length === 0
            ? el('p', { class: 'empty', text: '没有查到充值记录。' })
            : el(
                'div',
                {},
                el('p', {
                  class: 'hint',
                  text:
                    '根据后台数据，共 ' +
                    r.total +
                    ' 条' +
                    (r.total > r.shown_max ? '（显示最近 ' + r.shown_max + ' 条）' : '') +
                    '。',
                }),
                table(
                  [
                    ['充值记录', (x) => x.record_id],
                    ['卡号', (x) => x.card_number],
                    ['车牌号', (x) => x.plate],
                    ['充值金额', (x) => yuan(x.amount)],
                    [
                      '圈存状态',
                      (x) => el('span', { class: 'status ' + x.status, text: x.status_label }),
                    ],
                    ['充值渠道', (x) => x.channel],
                    ['充值时间', (x) => when(x.recharged_at)],
                    ['圈存站点', (x) => x.site_id],
                    ['圈存时间', (x) => when(x.loaded_at)],
                    ['充值前余额', (x) => (x.balance_before === null ? null : yuan(x.balance_before))],
                    ['充值后余额', (x) => (x.balance_after === null ? null : yuan(x.balance_after))],
                  ],
                  r.records,
                  'records-table',
                ),
              ),
      );
    };
    main.append(
      el('p', { class: 'hint', text: '输入卡号或车牌号查询充值记录；圈存状态为“已圈存”表示金额已写入卡内。' }),
      el(
        'form',
        {
          class: 'toolbar',
          id: 'records-form',
          /** @param {Event} e */
          onsubmit: (e) => {
            e.preventDefault();
            search();
          },
        },
        el('label', { class: 'field' }, '卡号', card),
        el('label', { class: 'field' }, '车牌号', plate),
        el('button', { type: 'submit', id: 'records-search', text: '查询' }),
      ),
      out,
    );
  },
};
