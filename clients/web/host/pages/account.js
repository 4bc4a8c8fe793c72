// @ts-check
// 修改密码: the logged-in operator's own password (the old one checked by the host).

import { el } from '../../lib/dom.js';
import { call } from '../rpc.js';
import { dialog, alertBox, errorBox } from '../ui.js';

export async function changePassword() {
  const input = (/** @type {string} */ id) =>
    el('input', { id, type: 'password', maxlength: '128', autocomplete: 'off' });
  const old = input('cp-old');
  const next = input('cp-new');
  const again = input('cp-again');
  const ok = await dialog({
    title: '修改密码',
    message: '新密码对所有站点和后台同时生效。',
    body: el(
      'div',
      { class: 'form' },
      el('label', { class: 'field' }, '原密码', old),
      el('label', { class: 'field' }, '新密码', next),
      el('label', { class: 'field' }, '再次输入新密码', again),
    ),
    buttons: [
      ['取消', false, 'secondary'],
      ['修改', true],
    ],
  });
  if (!ok) return;
  if (next.value !== again.value) {
    await alertBox('两次输入的新密码不一致，密码未修改。', '修改密码');
    return;
  }
  try {
    await call('auth.change_password', { old_password: old.value, new_password: next.value });
    await alertBox('密码已修改，下次登录请使用新密码。', '修改密码');
  } catch (err) {
    await errorBox(err, '密码未修改');
  }
}
