// @ts-check
// The kiosk screen: 自助圈存 with no operator and no keyboard. Idle until a card is inserted
// (card events over the WebSocket), then the etc.kiosk_load flow: the card's pending recharges
// to choose from, the confirmation, progress, the result; back to idle when the card is taken
// out or after a while. A card pulled in the middle of a load is explained, and the same card
// inserted again is settled from the card by cardd (never loaded twice).

import {
  ApiError,
  setToken,
  call,
  describe,
  startFlow,
  forgetFlow,
  followRun,
  subscribeEvents,
  onUnauthenticated,
  getToken,
} from './lib/rpc.js';
import { $, allOf, el } from './lib/dom.js';
import * as sim from './lib/sim.js';

/// Back to idle this long after a result or an error, in milliseconds.
const RESULT_IDLE_MS = 20000;
/// A question nobody answers is cancelled after this long, in milliseconds.
const QUESTION_IDLE_MS = 60000;
const FLOW = 'etc.kiosk_load';
const SLOT = 'kiosk';

// The kiosk account, in memory only, to log in again when the session times out.
/** @type {{ username: string, password: string } | null} */
let account = null;
/** @type {string | null} */
let readerId = null;
let cardPresent = false;
// The run in progress: { runId, loading (a load was sent to the card), cancelled }.
/** @type {{ runId: string | null, loading: boolean, cancelled: boolean } | null} */
let run = null;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let idleTimer;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let questionTimer;
/** @type {((answer: unknown) => void) | null} */
let answerResolve = null;
// What cardd found on the card about an earlier interrupted load (load_resolved), to tell.
let resolvedNote = '';
/** @type {Record<string, string>} */
const RESOLVED = {
  landed: '上次中断的圈存已确认写入卡内，无需再次圈存。',
  not_landed: '上次中断的圈存未写入卡内，可以重新圈存。',
  needs_reconciliation: '上次中断的圈存需要人工核对，请联系工作人员。',
};

/** @param {string} name the screen (`screen-<name>`) to show */
function show(name) {
  for (const s of allOf('.screen')) s.hidden = s.id !== 'screen-' + name;
  document.body.dataset.screen = name;
}

/**
 * @param {number} ms
 * @param {() => void} fn
 */
function later(ms, fn) {
  clearTimeout(idleTimer);
  idleTimer = setTimeout(fn, ms);
}

function idle() {
  clearTimeout(idleTimer);
  clearTimeout(questionTimer);
  if (answerResolve) answerResolve(null);
  answerResolve = null;
  if (cardPresent && !run) {
    show('result');
    $('result-icon').className = 'icon warn';
    $('result-message').textContent = '请取回卡片';
    $('result-fields').replaceChildren();
    $('result-hint').textContent = '';
    $('result-pending').hidden = true;
    $('result-next').hidden = true;
    return;
  }
  show('idle');
}

function tick() {
  const d = new Date();
  const p = (/** @type {number} */ n) => String(n).padStart(2, '0');
  $('clock').textContent =
    d.getFullYear() +
    '-' +
    p(d.getMonth() + 1) +
    '-' +
    p(d.getDate()) +
    ' ' +
    p(d.getHours()) +
    ':' +
    p(d.getMinutes());
}

// ---- setup and session ---------------------------------------------------------------------

async function login() {
  const { username, password } = /** @type {NonNullable<typeof account>} */ (account);
  const r = await call('auth.login', { username, password });
  setToken(r.token);
  const me = await call('auth.whoami', {});
  if (me.role !== 'kiosk') {
    setToken(null);
    throw new ApiError(-32041, '该账号不是自助终端账号（角色应为自助终端）', {
      error: 'Forbidden',
    });
  }
}

onUnauthenticated(() => {
  setToken(null);
  if (account)
    login()
      .then(start)
      .catch(() => show('setup'));
  else show('setup');
});

$('setup-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  account = {
    username: $('setup-user', HTMLInputElement).value.trim(),
    password: $('setup-password', HTMLInputElement).value,
  };
  $('setup-error').textContent = '';
  try {
    await login();
    $('setup-password', HTMLInputElement).value = '';
    await start();
  } catch (err) {
    account = null;
    const { message, action } = describe(err);
    $('setup-error').textContent = message + ' ' + action;
  }
});

/** @type {(() => void) | null} */
let stopEvents = null;

async function start() {
  const readers = await call('readers.list', {});
  const wanted = new URLSearchParams(location.search).get('reader');
  const reader =
    readers.find((r) => r.id === wanted) ||
    readers.find((r) => r.id.includes('etc') || /ETC/.test(r.name)) ||
    readers[0];
  if (!reader) {
    showError('未找到读卡器', '请联系工作人员检查读卡器连接。');
    return;
  }
  readerId = reader.id;
  cardPresent = reader.card_present;
  if (stopEvents) stopEvents();
  stopEvents = subscribeEvents(onEvent);
  setupDemo();
  if (cardPresent) begin(0);
  else idle();
}

// ---- the demo's 模拟读卡器 drawer ----------------------------------------------------------

// On the embedded default (`cardd --demo`), `/kiosk/demo` (or `/kiosk?demo`) adds a
// 模拟读卡器 button to the bar: a drawer to insert, take out and swap the demo cards and to
// pull one in the middle of a load, so the kiosk can be tried from its idle screen with no
// hardware. Elsewhere the daemon has no such methods and nothing is shown.
/** @type {ReturnType<typeof sim.panel> | null} */
let simPanel = null;

async function setupDemo() {
  const demo =
    /\/demo\/?$/.test(location.pathname) || new URLSearchParams(location.search).has('demo');
  if (simPanel || !demo) return;
  const available = await sim.available();
  // For tests and support: whether this page offers the panel.
  document.body.dataset.sim = available ? 'on' : 'off';
  if (!available || simPanel) return;
  simPanel = sim.panel(() => {
    $('sim-drawer').hidden = true;
  });
  $('sim-slot').replaceChildren(simPanel);
  $('sim-toggle').hidden = false;
}

$('sim-toggle').addEventListener('click', async () => {
  if (simPanel) await simPanel.refresh(true);
  $('sim-drawer').hidden = false;
});
$('sim-close').addEventListener('click', () => {
  $('sim-drawer').hidden = true;
});

// ---- card events ---------------------------------------------------------------------------

/** @param {import('./lib/rpc.js').CarddEvent} ev */
function onEvent(ev) {
  if (!('reader_id' in ev) || ev.reader_id !== readerId) return;
  if (ev.type === 'load_resolved') {
    resolvedNote = RESOLVED[ev.outcome] || '';
  } else if (ev.type === 'card_inserted') {
    cardPresent = true;
    if (!run) begin(0);
  } else if (ev.type === 'card_removed') {
    cardPresent = false;
    if (run && run.loading) {
      // Pulled in the middle of the load: the run will fail; say what happened now.
      pulledMidLoad();
    } else if (run) {
      run.cancelled = true;
      call('flows.cancel', { run_id: /** @type {string} */ (run.runId) }).catch(() => {});
      if (answerResolve) answerResolve(null);
      idle();
    } else if (document.body.dataset.screen !== 'error') {
      idle();
    }
  }
}

function pulledMidLoad() {
  clearTimeout(idleTimer);
  showError(
    '圈存过程中卡片被拔出',
    '请将同一张卡片重新插入读卡器：系统会先读取卡片，核对这笔圈存是否已写入卡内，然后继续或告知结果，不会重复圈存。如有疑问请联系工作人员。',
    true,
  );
}

// ---- the flow ------------------------------------------------------------------------------

/// Times a start refused because the reader is still busy (settling the inserted card) is
/// tried again, a second apart.
const BUSY_RETRIES_MAX = 10;
const BUSY_RETRY_MS = 1000;

/** @param {number} busyRetries */
async function begin(busyRetries) {
  clearTimeout(idleTimer);
  forgetFlow(SLOT);
  run = { runId: null, loading: false, cancelled: false };
  show('busy');
  $('busy-message').textContent = '正在读取卡片，请勿拔卡……';
  let done;
  try {
    const started = await startFlow(SLOT, FLOW, {}, readerId);
    run.runId = started.run_id;
    done = await followRun(started.run_id, {
      progress: (m) => {
        if (run && run.cancelled) return;
        if (/圈存中|正在圈存/.test(m) && run) run.loading = true;
        if (document.body.dataset.screen !== 'error') {
          show('busy');
          $('busy-message').textContent = m;
        }
      },
      prompt: ask,
    });
  } catch (err) {
    const wasLoading = run && run.loading;
    const cancelled = run && run.cancelled;
    run = null;
    forgetFlow(SLOT);
    if (cancelled) {
      idle();
      return;
    }
    if (wasLoading && !cardPresent) {
      pulledMidLoad();
      return;
    }
    // The session ended: the handler logs in again and starts over with the card in place.
    if (err.name === 'Unauthenticated' && account) return;
    const tries = busyRetries || 0;
    if (err.name === 'ReaderBusy' && cardPresent && tries < BUSY_RETRIES_MAX) {
      setTimeout(() => {
        if (!run && cardPresent) begin(tries + 1);
      }, BUSY_RETRY_MS);
      return;
    }
    const { message, action } = describe(err);
    showError(message, action);
    return;
  }
  const wasLoading = run.loading;
  const cancelled = run.cancelled;
  run = null;
  forgetFlow(SLOT);
  if (cancelled) {
    idle();
    return;
  }
  finish(done, wasLoading);
}

// A question: choose among the pending recharges, or confirm the load.
/** @param {import('./lib/rpc.js').Prompt} prompt */
function ask(prompt) {
  clearTimeout(questionTimer);
  const answer = new Promise((resolve) => {
    answerResolve = resolve;
  });
  if (prompt.kind === 'choose') {
    $('choose-message').textContent = prompt.message;
    $('choose-list').replaceChildren(
      ...prompt.choices.map((c) =>
        el('button', {
          type: 'button',
          text: c,
          onclick: () => reply(c),
        }),
      ),
    );
    show('choose');
  } else {
    $('confirm-message').textContent = prompt.message;
    show('confirm');
    // A money confirmation starts on 取消: nothing is loaded by a stray key press.
    $('confirm-no').focus();
  }
  questionTimer = setTimeout(() => reply(null), QUESTION_IDLE_MS);
  return answer.then((value) => {
    clearTimeout(questionTimer);
    if (value === null) {
      // Cancelled, timed out or card taken: stop the run, the answer is never sent.
      if (run) {
        run.cancelled = true;
        call('flows.cancel', { run_id: /** @type {string} */ (run.runId) }).catch(() => {});
      }
      throw new ApiError(0, '已取消', { error: 'Cancelled' });
    }
    show('busy');
    $('busy-message').textContent =
      value === true ? '正在圈存，请勿拔卡……' : '正在读取卡片，请勿拔卡……';
    if (value === true && run) run.loading = true;
    return value;
  });
}

/** @param {unknown} value */
function reply(value) {
  const resolve = answerResolve;
  answerResolve = null;
  if (resolve) resolve(value);
}

$('choose-cancel').addEventListener('click', () => reply(null));
// Esc cancels a question, like 取消.
document.addEventListener('keydown', (e) => {
  if (e.key !== 'Escape' || !answerResolve) return;
  const screenName = document.body.dataset.screen;
  if (screenName === 'confirm') reply(false);
  else if (screenName === 'choose') reply(null);
});
$('confirm-no').addEventListener('click', () => reply(false));
$('confirm-yes').addEventListener('click', () => reply(true));
$('result-done').addEventListener('click', idle);
$('result-next').addEventListener('click', () => {
  if (cardPresent && !run) begin(0);
});
$('error-done').addEventListener('click', idle);

/**
 * @param {import('./lib/rpc.js').Run} done
 * @param {boolean} wasLoading
 */
function finish(done, wasLoading) {
  if (done.state !== 'succeeded') {
    if (wasLoading && !cardPresent) {
      pulledMidLoad();
      return;
    }
    const message = (done.failure && done.failure.message) || '圈存未完成';
    const action = wasLoading
      ? '请勿拔卡，稍候将同一张卡片重新插入：系统会核对卡片后告知结果，不会重复圈存。'
      : '请取回卡片后重试；如仍不成功，请到人工窗口办理。';
    showError(message, action);
    return;
  }
  // What the etc.kiosk_load flow returns.
  const r = /** @type {any} */ (done.result || {});
  show('result');
  const ok = r.status === 'ok' || (r.status === 'none' && resolvedNote === RESOLVED.landed);
  $('result-icon').className = 'icon ' + (ok ? 'ok' : 'warn');
  $('result-message').textContent = r.message || (ok ? '圈存成功！' : '');
  const pairs = [
    ['卡号', r.card_number],
    ['圈存前余额', r.balance_before],
    ['圈存金额', r.amount],
    ['圈存后余额', r.balance_after],
    ['卡内余额', r.status === 'none' ? r.balance : undefined],
  ]
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => [k, k === '卡号' ? v : v + ' 元']);
  $('result-fields').replaceChildren(
    ...pairs.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]),
  );
  // Another recharge of the same card still waiting (the daemon's records for the card).
  const left = Number(r.pending_left) || 0;
  $('result-pending').hidden = left === 0;
  $('result-pending').textContent = left > 0 ? '该卡还有 ' + left + ' 笔充值待圈存' : '';
  $('result-next').hidden = !(left > 0 && cardPresent);
  const takeCard =
    cardPresent && left === 0 && !(r.message || '').includes('取回卡片') ? '请取回卡片' : '';
  $('result-hint').textContent = resolvedNote + takeCard;
  resolvedNote = '';
  later(RESULT_IDLE_MS, idle);
}

/**
 * @param {string} message
 * @param {string} action
 * @param {boolean} [keep]
 */
function showError(message, action, keep) {
  show('error');
  $('error-message').textContent = message;
  $('error-action').textContent = action || '';
  if (!keep) later(RESULT_IDLE_MS, idle);
}

tick();
setInterval(tick, 30000);
if (getToken()) {
  call('auth.whoami', {})
    .then((me) => (me.role === 'kiosk' ? start() : show('setup')))
    .catch(() => show('setup'));
} else {
  show('setup');
}
