// @ts-check
// 审计日志 (auditors, administrators): the host's hash-chained log, newest first, by chain,
// a page at a time; 验证 walks every chain and says whether it is intact or where it breaks.

import { $, el } from '../../lib/dom.js';
import { call } from '../rpc.js';
import { errorBox, fill, table, when } from '../ui.js';

/**
 * What an outcome is called: `started` is written before the change is made.
 * @type {Record<string, string>}
 */
const OUTCOMES = { started: '操作前记录', ok: '成功' };

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'audit',
  title: '审计日志',
  method: 'audit.list',
  render(main) {
    const out = el('div', { id: 'audit-result' });
    const verdict = el('p', { id: 'audit-verify-result', class: 'verify-result' });
    const chain = el('input', {
      id: 'audit-chain',
      maxlength: '64',
      placeholder: '全部（或 host、站点编号）',
    });
    let page_ = 1;
    const load = () =>
      fill(
        out,
        () =>
          call('audit.list', {
            chain: $('audit-chain', HTMLInputElement).value.trim(),
            page: page_,
          }),
        (r) =>
          el(
            'div',
            {},
            r.records.length === 0
              ? el('p', { class: 'empty', text: '没有审计记录。' })
              : table(
                  [
                    ['时间', (x) => when(x.at)],
                    ['链', (x) => x.chain + ' #' + x.seq],
                    ['操作人', (x) => x.actor],
                    ['操作', (x) => x.action],
                    ['对象', (x) => x.target],
                    ['结果', (x) => OUTCOMES[x.outcome] || x.outcome],
                    ['详情', (x) => el('span', { class: 'audit-detail', text: x.detail })],
                  ],
                  r.records,
                  'audit-table',
                ),
            el(
              'div',
              { class: 'pager' },
              el('button', {
                type: 'button',
                class: 'secondary',
                text: '上一页',
                disabled: r.page <= 1,
                onclick: () => {
                  page_ = Math.max(1, r.page - 1);
                  load();
                },
              }),
              ' 第 ' + r.page + ' 页 ',
              el('button', {
                type: 'button',
                class: 'secondary',
                text: '下一页',
                disabled: !r.more,
                onclick: () => {
                  page_ = r.page + 1;
                  load();
                },
              }),
            ),
          ),
      );
    const verify = async () => {
      verdict.textContent = '正在验证…';
      verdict.className = 'verify-result';
      try {
        const r = await call('audit.verify', {});
        verdict.textContent = r.message;
        verdict.className = 'verify-result ' + (r.intact ? 'intact' : 'broken');
      } catch (err) {
        verdict.textContent = '';
        errorBox(err, '验证未完成');
      }
    };
    main.append(
      el(
        'form',
        {
          class: 'toolbar',
          /** @param {Event} e */
          onsubmit: (e) => {
            e.preventDefault();
            page_ = 1;
            load();
          },
        },
        el('label', { class: 'field' }, '链', chain),
        el('button', { type: 'submit', text: '查询' }),
        el('button', {
          type: 'button',
          id: 'audit-verify',
          class: 'secondary',
          text: '验证',
          onclick: verify,
        }),
      ),
      verdict,
      out,
    );
    load();
  },
};
