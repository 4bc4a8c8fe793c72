// @ts-check
// 操作员管理 (administrators): the fleet's operators: list, create, 停用/启用, 重置密码.

import { el } from '../../lib/dom.js';
import { call } from '../rpc.js';
import { alertBox, askText, confirmBox, dialog, errorBox, fill, me, table, when } from '../ui.js';

/** @typedef {import('../api').OperatorRow} OperatorRow */

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'operators',
  title: '操作员管理',
  method: 'operators.list',
  render(main) {
    const out = el('div', { id: 'operators-result' });
    /** @type {{ role: string, label: string }[]} */
    let roles = [];
    /**
     * @param {string} label
     * @param {() => Promise<unknown>} work
     */
    const act = async (label, work) => {
      try {
        await work();
        await alertBox(label + '已完成。', '操作员管理');
      } catch (err) {
        await errorBox(err, label + '未完成');
      }
      load();
    };
    const create = async () => {
      const username = el('input', { id: 'op-username', maxlength: '32' });
      const name = el('input', { id: 'op-name', maxlength: '64' });
      const role = el(
        'select',
        { id: 'op-role' },
        roles.map((r) => el('option', { value: r.role, text: r.label })),
      );
      const group = el('input', { id: 'op-group', maxlength: '32', placeholder: '集团操作员必填' });
      const password = el('input', { id: 'op-password', type: 'password', maxlength: '128' });
      const ok = await dialog({
        title: '新建操作员',
        message: '操作员可在所有站点登录；管理员、审核员和主管也可登录后台。',
        body: el(
          'div',
          { class: 'form' },
          el('label', { class: 'field' }, '用户名', username),
          el('label', { class: 'field' }, '姓名', name),
          el('label', { class: 'field' }, '角色', role),
          el('label', { class: 'field' }, '集团编号', group),
          el('label', { class: 'field' }, '初始密码', password),
        ),
        buttons: [
          ['取消', false, 'secondary'],
          ['新建', true],
        ],
      });
      if (!ok) return;
      act('新建操作员', () =>
        call('operators.create', {
          username: username.value.trim(),
          display_name: name.value.trim(),
          role: role.value,
          group_id: group.value.trim() || null,
          password: password.value,
        }),
      );
    };
    /** @param {OperatorRow} o */
    const toggle = (o) => async () => {
      const label = o.disabled ? '启用' : '停用';
      const ok = await confirmBox(
        label +
          '操作员 ' +
          o.username +
          '（' +
          o.display_name +
          '）' +
          (o.disabled ? '？' : '？停用后该操作员在所有站点和后台立即退出，不能再登录。'),
        label + '操作员',
        label,
      );
      if (!ok) return;
      act(label + '操作员', () =>
        call('operators.set_disabled', { username: o.username, disabled: !o.disabled }),
      );
    };
    /** @param {OperatorRow} o */
    const reset = (o) => async () => {
      const password = await askText('为 ' + o.username + ' 设置新密码', '新密码', {
        password: true,
      });
      if (!password) return;
      act('重置密码', () => call('operators.reset_password', { username: o.username, password }));
    };
    const load = () =>
      fill(
        out,
        async () => {
          const r = await call('operators.list', {});
          roles = r.roles;
          return r.operators;
        },
        (rows) =>
          table(
            [
              ['用户名', (o) => o.username],
              ['姓名', (o) => o.display_name],
              ['角色', (o) => o.role_label],
              ['集团编号', (o) => o.group_id],
              ['状态', (o) => (o.disabled ? '已停用' : '正常')],
              ['创建时间', (o) => when(o.created_at)],
              [
                '操作',
                (o) =>
                  el(
                    'span',
                    { class: 'row-actions' },
                    o.username === me().username
                      ? null
                      : el('button', {
                          type: 'button',
                          class: 'secondary',
                          text: o.disabled ? '启用' : '停用',
                          onclick: toggle(o),
                        }),
                    el('button', {
                      type: 'button',
                      class: 'secondary',
                      text: '重置密码',
                      onclick: reset(o),
                    }),
                  ),
              ],
            ],
            rows,
            'operators-table',
            (o) => (o.disabled ? 'site-disabled' : ''),
          ),
      );
    main.append(
      el(
        'div',
        { class: 'toolbar' },
        el('button', { type: 'button', id: 'operators-new', text: '新建操作员', onclick: create }),
      ),
      out,
    );
    load();
  },
};
