// @ts-check
// 站点管理 (administrators): the sites that may connect; enrol one from its certificate, 吊销
// (revoke: refused from its next call on) or enable it again.

import { el } from '../../lib/dom.js';
import { call } from '../rpc.js';
import { alertBox, confirmBox, dialog, errorBox, fill, table, when } from '../ui.js';

/** @typedef {import('../api').SiteRow} SiteRow */

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'sites',
  title: '站点管理',
  method: 'sites.list',
  render(main) {
    const out = el('div', { id: 'sites-result' });
    /**
     * @param {string} label
     * @param {() => Promise<unknown>} work
     * @param {string} done
     */
    const act = async (label, work, done) => {
      try {
        await work();
        await alertBox(done, '站点管理');
      } catch (err) {
        await errorBox(err, label + '未完成');
      }
      load();
    };
    const enrol = async () => {
      const id = el('input', { id: 'site-id', maxlength: '32', placeholder: '例如 S03' });
      const pem = el('textarea', {
        id: 'site-pem',
        class: 'pem',
        placeholder: '-----BEGIN CERTIFICATE-----',
      });
      const ok = await dialog({
        title: '登记站点',
        message:
          '粘贴 cardd-fleet ca issue-site 为该站点生成的证书（site.crt）全文；' +
          '证书中的站点编号须与填写的一致。已登记的站点再次登记即更换证书，旧证书随即失效。',
        body: el(
          'div',
          { class: 'form' },
          el('label', { class: 'field' }, '站点编号', id),
          el('label', { class: 'field' }, '站点证书', pem),
        ),
        buttons: [
          ['取消', false, 'secondary'],
          ['登记', true],
        ],
      });
      if (!ok) return;
      const site_id = id.value.trim();
      act(
        '登记站点',
        () => call('sites.enrol', { site_id, cert_pem: pem.value }),
        '站点 ' + site_id + ' 已登记，可以连接后台。',
      );
    };
    /** @param {SiteRow} s */
    const revoke = (s) => async () => {
      const ok = await confirmBox(
        '吊销站点 ' +
          s.site_id +
          '？吊销后该站点对后台的下一次请求即被拒绝：柜员无法登录、查询和圈存，直到管理员重新启用。',
        '吊销站点',
        '吊销',
      );
      if (!ok) return;
      act(
        '吊销站点',
        () => call('sites.set_enabled', { site_id: s.site_id, enabled: false }),
        '站点 ' + s.site_id + ' 已吊销。',
      );
    };
    /** @param {SiteRow} s */
    const enable = (s) => async () => {
      const ok = await confirmBox('重新启用站点 ' + s.site_id + '？', '启用站点', '启用');
      if (!ok) return;
      act(
        '启用站点',
        () => call('sites.set_enabled', { site_id: s.site_id, enabled: true }),
        '站点 ' + s.site_id + ' 已启用。',
      );
    };
    const load = () =>
      fill(
        out,
        () => call('sites.list', {}),
        (rows) =>
          rows.length === 0
            ? el('p', { class: 'empty', text: '还没有登记站点。' })
            : table(
                [
                  ['站点编号', (s) => s.site_id],
                  ['状态', (s) => (s.enabled ? '正常' : '已吊销')],
                  [
                    '证书指纹（SHA-256）',
                    (s) => el('span', { class: 'fingerprint', text: s.cert_fingerprint }),
                  ],
                  ['最近联系', (s) => when(s.last_seen_at)],
                  ['待上传', (s) => (s.outbox_pending === null ? null : s.outbox_pending + ' 条')],
                  ['变更时间', (s) => when(s.updated_at)],
                  [
                    '操作',
                    (s) =>
                      s.enabled
                        ? el('button', {
                            type: 'button',
                            class: 'warn revoke',
                            'data-site': s.site_id,
                            text: '吊销',
                            onclick: revoke(s),
                          })
                        : el('button', {
                            type: 'button',
                            class: 'secondary enable',
                            'data-site': s.site_id,
                            text: '启用',
                            onclick: enable(s),
                          }),
                  ],
                ],
                rows,
                'sites-table',
                (s) => (s.enabled ? '' : 'site-disabled'),
              ),
      );
    main.append(
      el(
        'div',
        { class: 'toolbar' },
        el('button', { type: 'button', id: 'sites-enrol', text: '登记站点', onclick: enrol }),
      ),
      out,
    );
    load();
  },
};
