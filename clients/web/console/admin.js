// @ts-check
// Administration: operators, 模拟读卡器, 修改密码.

import { call } from '../lib/rpc.js';
import { $, el } from '../lib/dom.js';
import { roleLabel, vocab } from '../lib/vocab.js';
import { state, alertBox, errorBox, askText, table, field } from './ui.js';
import * as sim from '../lib/sim.js';

// ---- administration, password --------------------------------------------------------------

// The password rule, shown next to every new-password field before anything is sent.
export const passwordRule = () =>
  '密码至少' + ((state.me && state.me.password_chars_min) || 6) + '个字符。';

/** @param {HTMLElement} main */
export function pageOperators(main) {
  const out = el('div', { id: 'op-result' });
  const username = el('input', { id: 'op-user', maxlength: '64', required: true });
  const name = el('input', { id: 'op-name', maxlength: '64' });
  const password = el('input', {
    id: 'op-password',
    type: 'password',
    required: true,
    placeholder: passwordRule(),
  });
  const roleSel = el(
    'select',
    { id: 'op-role' },
    vocab.roles.map((r) => el('option', { value: r.code, text: r.label })),
  );
  const group = el('input', { id: 'op-group', maxlength: '32', placeholder: '集团操作员必填' });
  const load = async () => {
    let ops;
    try {
      ops = await call('operators.list', {});
    } catch (err) {
      errorBox(err, '查询失败');
      return;
    }
    out.replaceChildren(
      table(
        [
          ['用户名', (o) => o.username],
          ['姓名', (o) => o.display_name],
          ['角色', (o) => roleLabel(o.role)],
          ['集团', (o) => o.group_id],
          ['状态', (o) => (o.disabled ? '已停用' : '正常')],
          [
            '操作',
            (o) =>
              el(
                'span',
                { class: 'row-actions' },
                el('button', {
                  type: 'button',
                  class: 'secondary',
                  text: o.disabled ? '启用' : '停用',
                  onclick: async () => {
                    try {
                      await call('operators.set_disabled', {
                        username: o.username,
                        disabled: !o.disabled,
                      });
                    } catch (err) {
                      await errorBox(err);
                    }
                    load();
                  },
                }),
                el('button', {
                  type: 'button',
                  class: 'secondary',
                  text: '重置密码',
                  onclick: async () => {
                    const pw = await askText(
                      '为 ' +
                        (o.display_name || o.username) +
                        '（用户名 ' +
                        o.username +
                        '）设置新密码（其登录将结束）。' +
                        passwordRule(),
                      '新密码',
                    );
                    if (!pw) return;
                    try {
                      await call('operators.reset_password', {
                        username: o.username,
                        new_password: pw,
                      });
                      await alertBox('密码已重置。');
                    } catch (err) {
                      await errorBox(err);
                    }
                  },
                }),
              ),
          ],
        ],
        ops,
        'op-table',
      ),
    );
  };
  main.append(
    el(
      'form',
      {
        class: 'toolbar',
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          /** @type {import('../types/rpc').Params<'operators.create'>} */
          const params = {
            username: username.value.trim(),
            password: password.value,
            role: /** @type {import('../types/rpc').Role} */ (roleSel.value),
            display_name: name.value.trim() || username.value.trim(),
          };
          if (group.value.trim()) params.group_id = group.value.trim();
          try {
            await call('operators.create', params);
            await alertBox('操作员已创建。');
          } catch (err) {
            await errorBox(err, '创建失败');
          }
          load();
        },
      },
      field('用户名', username),
      field('姓名', name),
      field('初始密码', password),
      field('角色', roleSel),
      field('集团编号', group),
      el('button', { type: 'submit', text: '新建操作员' }),
    ),
    out,
  );
  load();
}

// 模拟读卡器: the embedded default's simulated readers (demo only; see lib/sim.js).
/** @param {HTMLElement} main */
export function pageSim(main) {
  main.appendChild(
    el('p', {
      class: 'hint',
      text: '自助终端演示：在浏览器中打开 /kiosk/demo，用自助终端账号登录后，点击右上角的“模拟读卡器”也可在自助终端页面上操作。',
    }),
  );
  main.appendChild(sim.panel());
}

/** @param {HTMLElement} main */
export function pagePassword(main) {
  const oldPw = el('input', {
    id: 'pw-old',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
  });
  const newPw = el('input', {
    id: 'pw-new',
    type: 'password',
    autocomplete: 'new-password',
    required: true,
  });
  const confirmPw = el('input', {
    id: 'pw-confirm',
    type: 'password',
    autocomplete: 'new-password',
    required: true,
  });
  // The rule before anything is typed (the seed: any letters and digits; cardd also asks for
  // a least length and a change).
  const min = (state.me && state.me.password_chars_min) || 6;
  const max = (state.me && state.me.password_chars_max) || 256;
  const rule = el('p', {
    class: 'hint',
    id: 'pw-rule',
    text:
      '新密码可以输入任何字母和数字，至少 ' +
      min +
      ' 个字符、最多 ' +
      max +
      ' 个字符，不能与原密码相同；确认密码须与新密码一致。修改后其他已登录的页面需重新登录。',
  });
  main.append(
    el(
      'form',
      {
        class: 'form',
        id: 'pw-form',
        onsubmit: async (/** @type {Event} */ e) => {
          e.preventDefault();
          try {
            await call('auth.change_password', {
              old_password: oldPw.value,
              new_password: newPw.value,
              confirm_password: confirmPw.value,
            });
            oldPw.value = '';
            newPw.value = '';
            confirmPw.value = '';
            await alertBox('密码已修改', '修改密码');
          } catch (err) {
            await errorBox(err, '密码未修改');
          }
        },
      },
      rule,
      field('原密码', oldPw),
      field('新密码', newPw),
      field('确认密码', confirmPw),
      el('button', { type: 'submit', id: 'pw-submit', text: '修改密码' }),
    ),
  );
}
