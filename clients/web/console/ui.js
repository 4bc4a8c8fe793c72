// @ts-check
// The console's shared parts: the logged-in state, dialogs, tables and fields, readers.

import { describe } from '../lib/rpc.js';
import { $, el } from '../lib/dom.js';
import { vocab, rules } from '../lib/vocab.js';

export const QUOTA_NOTE = '充值扣除集团可用额度；额度不足时请先进行额度充值并等待审核。';
export const REFUND_NOTE =
  '特别说明：充值失败的订单，系统审核后会在1-3个工作日内将金额退回到额度中。';
// The rules of 集团充值 as the page lists them, in the rules' own figures.
export function groupRuleLines() {
  const r = rules.group;
  const figures = r
    ? [
        '充值金额为' + r.step_yuan + '元的整数倍，充值金额不能小于' + r.min_yuan + '元。',
        '充值后卡内金额不能超' + r.card_balance_max_yuan + '元。',
      ]
    : [];
  return [...figures, QUOTA_NOTE, REFUND_NOTE];
}

/** @typedef {import('../types/rpc').Result<'auth.whoami'>} WhoAmI */
/** @typedef {import('../types/rpc').Result<'flows.list'>[number]} FlowInfo */
/** @typedef {import('../types/rpc').Result<'card.summary'>} CardSummary */
/**
 * A reader as the console keeps it: what readers.list says, and the card on it.
 * @typedef {import('../types/rpc').Result<'readers.list'>[number] & { card?: CardSummary | null }}
 *   Reader
 */

/**
 * The logged-in operator, the flows and methods cardd offers them, the readers, and how to
 * stop the event subscription.
 * @type {{
 *   me: WhoAmI | null,
 *   flows: FlowInfo[],
 *   methods: Set<string>,
 *   readers: Map<string, Reader>,
 *   stopEvents: (() => void) | null,
 * }}
 */
export const state = {
  me: null,
  flows: [],
  methods: new Set(),
  readers: new Map(),
  stopEvents: null,
};

/** The logged-in operator, on pages (which are shown only while one is). */
export const me = () => /** @type {WhoAmI} */ (state.me);

/** Shows the page the location names (again): the console's router sets it. */
export const router = { route: () => {} };

// ---- dialogs -------------------------------------------------------------------------------

/** @type {((value: any) => void) | null} */
let dialogResolve = null;
/** @type {[any] | null} */
let dialogCancel = null;

// Shows the modal: { title, message, body (element), buttons: [[label, value, class]] }.
// Resolves with the value of the button pressed. Focus starts on 取消 when there is one (so
// Enter never confirms a money question by default), otherwise on the last button; Esc
// answers as 取消 (or closes a notice).
/**
 * @typedef {[string, any, string?]} DialogButton label, value (a function: called for the
 *   value when pressed), class
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
  const cancel = list.find((b) => b[0] === '取消');
  dialogCancel = cancel
    ? [cancel[1]]
    : list.length === 1 && typeof list[0][1] !== 'function'
      ? [list[0][1]]
      : null;
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
    /** @type {HTMLElement | null} */
    const start = cancel
      ? buttons.querySelector('button[data-answer="' + String(cancel[1]) + '"]')
      : buttons.querySelector('button:last-child');
    const input = body.querySelector('input');
    if (input) input.focus();
    else if (start) start.focus();
  });
}

document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || $('dialog').hidden || !dialogCancel) return;
  e.preventDefault();
  closeDialog(dialogCancel[0]);
});

/** @param {unknown} value what the open dialog answers */
export function closeDialog(value) {
  $('dialog').hidden = true;
  dialogCancel = null;
  const resolve = dialogResolve;
  dialogResolve = null;
  if (resolve) resolve(value);
}

/**
 * 取消 / 确定: true when confirmed.
 * @param {string} message
 * @param {string} [title]
 * @returns {Promise<boolean | null>}
 */
export const confirmBox = (message, title) =>
  dialog({
    title: title || '请确认',
    message,
    buttons: [
      ['取消', false, 'secondary'],
      ['确定', true],
    ],
  });
/**
 * A notice with 确定.
 * @param {string} message
 * @param {string} [title]
 * @param {Node | null} [body]
 */
export const alertBox = (message, title, body) =>
  dialog({ title: title || '提示', message, body, buttons: [['确定', true]] });
/** @param {string} message what is being done */
export function progressBox(message) {
  dialog({ title: '请稍候', message, body: el('div', { class: 'spinner' }), buttons: [] });
}

// An error in a teller's words: what happened and what to do next.
/**
 * @param {unknown} err
 * @param {string} [title]
 * @param {Node | null} [extra] shown above the advice
 * @param {string | null} [messageOverride]
 * @param {string | null} [actionOverride]
 */
export function errorBox(err, title, extra, messageOverride, actionOverride) {
  // The login screen says the session ended; no second message over it.
  const named = /** @type {{ name?: string } | null | undefined} */ (err);
  if (named && named.name === 'Unauthenticated') return Promise.resolve(null);
  const described = describe(err);
  const message = messageOverride || described.message;
  const action = actionOverride || described.action;
  const body = el(
    'div',
    {},
    extra || null,
    action ? el('p', { class: 'action', text: '处理方法：' + action }) : null,
  );
  return dialog({ title: title || '操作未完成', message, body, buttons: [['确定', true]] });
}

// Asks for a line of text (a reason); null when cancelled or empty.
/**
 * @param {string} message
 * @param {string} label
 * @returns {Promise<string | null>}
 */
export async function askText(message, label) {
  const input = el('input', {
    id: 'dialog-input',
    maxlength: '200',
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
  return value ? value : null;
}

// ---- small builders ------------------------------------------------------------------------

/**
 * A time from the API as a teller reads it (`2024-05-01 09:30:00`), or `—`.
 * @param {string | null | undefined} v
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
 */
export function table(columns, rows, id) {
  const head = el(
    'tr',
    {},
    columns.map((c) => el('th', { text: c[0] })),
  );
  const body = rows.map((r) =>
    el(
      'tr',
      {},
      columns.map((c) => {
        const v = c[1](r);
        return el(
          'td',
          {},
          v instanceof Node ? v : String(v === null || v === undefined ? '—' : v),
        );
      }),
    ),
  );
  return el('table', { class: 'grid', id }, el('thead', {}, head), el('tbody', {}, body));
}

/**
 * A definition list of `[label, value]` pairs (`—` for no value).
 * @param {[string, unknown][]} pairs
 * @param {string} [id]
 */
export function fields(pairs, id) {
  return el(
    'dl',
    { class: 'fields', id },
    pairs.flatMap(([k, v]) => [
      el('dt', { text: k }),
      el('dd', { text: v === null || v === undefined || v === '' ? '—' : String(v) }),
    ]),
  );
}

/**
 * @param {string} label
 * @param {Node} input
 */
export function field(label, input) {
  return el('label', { class: 'field' }, el('span', { text: label }), input);
}

/** @param {string} id */
export function colourSelect(id) {
  return el(
    'select',
    { id },
    vocab.plate_colours.map((c) => el('option', { value: String(c.code), text: c.label })),
  );
}

// What kind of reader this is, from its capabilities: an OBU programmer, a contactless-only
// city-card reader, or a contact (ETC user card) reader.
/** @param {Reader} r */
export const isObuReader = (r) => !!(r.capabilities && r.capabilities.obu_channel);
/** @param {Reader} r */
export const isCityReader = (r) =>
  !isObuReader(r) && !!(r.capabilities && r.capabilities.contactless && !r.capabilities.contact);
/** @param {Reader} r */
export const isEtcReader = (r) => !isObuReader(r) && !isCityReader(r);

// The reader's name as a person reads it: the configured name when it is Chinese, otherwise
// what it is for (a hardware product name or an id is not something a teller should parse).
/** @param {Reader} r */
export function readerLabel(r) {
  if (/[\u4e00-\u9fff]/.test(r.name || '')) return r.name;
  if (isObuReader(r)) return 'OBU发行器';
  if (isCityReader(r)) return '城市一卡通读卡器';
  return 'ETC用户卡读卡器';
}

// The readers this operator's role works with: a group operator the city-card readers, the
// counter the ETC card readers and OBU programmers; auditors and administrators see all.
export function roleReaders() {
  const all = [...state.readers.values()];
  let mine = all;
  if (role() === 'group_operator') mine = all.filter(isCityReader);
  else if (role() === 'teller' || role() === 'supervisor')
    mine = all.filter((r) => !isCityReader(r));
  return mine.length ? mine : all;
}

/**
 * @param {string} id
 * @param {(r: Reader) => boolean} prefer which reader is chosen first
 */
export function readerSelect(id, prefer) {
  const readers = roleReaders();
  const chosen = readers.find(prefer) || readers[0];
  return el(
    'select',
    { id },
    readers.map((r) => el('option', { value: r.id, text: readerLabel(r), selected: r === chosen })),
  );
}

/** @param {string} name */
export const hasFlow = (name) => state.flows.some((f) => f.name === name);
/** @param {string} name */
export const hasMethod = (name) => state.methods.has(name);
export const role = () => (state.me ? state.me.role : '');
