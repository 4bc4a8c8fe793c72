// @ts-check
// The back office's shared parts: the logged-in operator, dialogs, tables and fields.

import { $, el } from '../lib/dom.js';

/** @typedef {import('./api').Me} Me */

/** The logged-in operator (set while the app view is shown). @type {{ me: Me | null }} */
export const state = { me: null };

/** The logged-in operator, on pages (which are shown only while one is). */
export const me = () => /** @type {Me} */ (state.me);

/** Whether the logged-in operator may call `method`. @param {string} method */
export const may = (method) => !!state.me && state.me.methods.includes(method);

/** @type {((value: any) => void) | null} */
let dialogResolve = null;

/**
 * Shows the modal; resolves with the value of the button pressed (Esc: 取消 / the only one).
 * @typedef {[string, any, string?]} DialogButton label, value (a function: called), class
 * @param {{ title?: string, message?: string, body?: Node | null, buttons?: DialogButton[] }} opts
 * @returns {Promise<any>}
 */
export function dialog(opts) {
  if (dialogResolve) dialogResolve(null);
  $('dialog-title').textContent = opts.title || '';
  $('dialog-message').textContent = opts.message || '';
  const body = $('dialog-body');
  body.replaceChildren();
  if (opts.body) body.appendChild(opts.body);
  const buttons = $('dialog-buttons');
  buttons.replaceChildren();
  $('dialog').hidden = false;
  const list = opts.buttons || [];
  return new Promise((resolve) => {
    dialogResolve = resolve;
    for (const [label, value, cls] of list) {
      buttons.appendChild(
        el('button', {
          type: 'button',
          class: cls || '',
          text: label,
          'data-answer': String(value),
          onclick: () => closeDialog(typeof value === 'function' ? value() : value),
        }),
      );
    }
    const input = body.querySelector('input, textarea');
    const cancel = list.findIndex((b) => b[0] === '取消');
    /** @type {HTMLElement | null} */
    const start =
      cancel >= 0
        ? /** @type {HTMLElement} */ (buttons.children[cancel])
        : /** @type {HTMLElement | null} */ (buttons.lastElementChild);
    if (input instanceof HTMLElement) input.focus();
    else if (start) start.focus();
  });
}

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || $('dialog').hidden) return;
  e.preventDefault();
  closeDialog(null);
});

/** @param {unknown} value what the open dialog answers */
export function closeDialog(value) {
  $('dialog').hidden = true;
  const resolve = dialogResolve;
  dialogResolve = null;
  if (resolve) resolve(value);
}

/**
 * 取消 / 确定: true when confirmed.
 * @param {string} message
 * @param {string} [title]
 * @param {string} [yes] the confirming button's label
 */
export const confirmBox = (message, title, yes) =>
  dialog({
    title: title || '请确认',
    message,
    buttons: [
      ['取消', false, 'secondary'],
      [yes || '确定', true],
    ],
  });

/**
 * A notice with 确定.
 * @param {string} message
 * @param {string} [title]
 */
export const alertBox = (message, title) =>
  dialog({ title: title || '提示', message, buttons: [['确定', true]] });

/**
 * An error as the host worded it (what happened, what to do next).
 * @param {unknown} err
 * @param {string} [title]
 */
export function errorBox(err, title) {
  const e = /** @type {{ name?: string, message?: string }} */ (err || {});
  if (e.name === 'NotLoggedIn' || e.name === 'SessionEnded') return Promise.resolve(null);
  return dialog({
    title: title || '操作未完成',
    message: e.message || String(err),
    buttons: [['确定', true]],
  });
}

/**
 * Asks for a line of text; null when cancelled, '' when left empty.
 * @param {string} message
 * @param {string} label
 * @param {{ password?: boolean, value?: string }} [opts]
 * @returns {Promise<string | null>}
 */
export async function askText(message, label, opts) {
  const input = el('input', {
    id: 'dialog-input',
    type: opts && opts.password ? 'password' : 'text',
    maxlength: '200',
    value: (opts && opts.value) || '',
    /** @param {KeyboardEvent} e */
    onkeydown: (e) => {
      if (e.key === 'Enter') {
        e.preventDefault();
        closeDialog(input.value.trim());
      }
    },
  });
  const value = await dialog({
    title: '请填写',
    message,
    body: el('label', { class: 'field' }, label, input),
    buttons: [
      ['取消', null, 'secondary'],
      ['确定', () => input.value.trim()],
    ],
  });
  return typeof value === 'string' ? value : null;
}

/**
 * A time as people read it: `2026-12-07 12:30:05`.
 * @param {string | null | undefined} v RFC 3339
 */
export const when = (v) =>
  v
    ? String(v)
        .replace('T', ' ')
        .replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, '')
    : '—';

/**
 * A table of `rows`, one column per `[heading, value of a row]`.
 * @template T
 * @param {[string, (row: T) => unknown][]} columns
 * @param {T[]} rows
 * @param {string} [id]
 * @param {(row: T) => string} [rowClass]
 */
export function table(columns, rows, id, rowClass) {
  const head = el(
    'tr',
    {},
    columns.map((c) => el('th', { text: c[0] })),
  );
  const body = rows.map((r) =>
    el(
      'tr',
      { class: rowClass ? rowClass(r) : null },
      columns.map((c) => {
        const v = c[1](r);
        return el(
          'td',
          {},
          v instanceof Node ? v : shown(v),
        );
      }),
    ),
  );
  return el('table', { class: 'grid', id }, el('thead', {}, head), el('tbody', {}, body));
}

/**
 * A value as a cell shows it: `—` for none.
 * @param {unknown} v
 */
const shown = (v) => String(v === null || v === undefined || v === '' ? '—' : v);

/**
 * A definition list of `[label, value]` pairs (`—` for no value).
 * @param {[string, unknown][]} pairs
 */
export function fields(pairs) {
  return el(
    'dl',
    { class: 'fields' },
    pairs.flatMap(([k, v]) => [
      el('dt', { text: k }),
      el('dd', {}, v instanceof Node ? v : shown(v)),
    ]),
  );
}

/**
 * Loads with `load` and shows what `show` makes of it in `out`; an error in a dialog.
 * @template T
 * @param {HTMLElement} out
 * @param {() => Promise<T>} load
 * @param {(value: T) => Node} show
 * @param {string} [what] the title of the error dialog
 */
export async function fill(out, load, show, what) {
  try {
    out.replaceChildren(show(await load()));
  } catch (err) {
    const message = String(/** @type {any} */ (err).message || err);
    out.replaceChildren(el('p', { class: 'error', text: message }));
    errorBox(err, what || '查询失败');
  }
}
