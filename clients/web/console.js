// @ts-check
// The teller console: login, role-aware navigation, live reader and card status, the ETC pages
// (充值记录, 圈存, 修改圈存状态, 充值, OBU发行), the group pages (充值, 充值查询, 额度充值,
// 额度充值查询), the auditor's pages, operator administration and 修改密码. Everything the
// operator reads is zh-CN; every action is a JSON-RPC call (see lib/rpc.js). This entry module
// logs in, keeps the session and the readers live, and routes to the pages in console/*.js.

import {
  setToken,
  call,
  describe,
  subscribeEvents,
  onUnauthenticated,
  onActivity,
  getToken,
} from './lib/rpc.js';
import { $, el } from './lib/dom.js';
import { loadGroupRules, loadVocabulary, roleLabel } from './lib/vocab.js';
import { loadReaders, onEvent } from './console/readers.js';
import { state, closeDialog, hasFlow, hasMethod, role, router } from './console/ui.js';
import {
  pageRecords,
  pageEtcRecharge,
  pageObu,
  pageFlowList,
  pageFlows,
  pageCard,
} from './console/etc.js';
import { pageGroupRecharge, pageGroupQuery, pageGroupTopUp } from './console/group.js';
import { pageAuditTopUps, pageAuditRefunds, pageJournalOpen } from './console/audit.js';
import { pageOperators, pageSim, pagePassword } from './console/admin.js';

// ---- login, session ------------------------------------------------------------------------

/** @param {string} [message] */
function showLogin(message) {
  clearSessionTimers();
  if (state.stopEvents) state.stopEvents();
  state.stopEvents = null;
  state.me = null;
  $('app-view').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message || '';
  $('login-password', HTMLInputElement).value = '';
  $('login-user').focus();
}

// ---- session idle timeout: a warning a minute before, what was typed kept over a re-login --

const WARN_BEFORE_MS = 60 * 1000;
/**
 * The idle clock's timers, and what was typed when the session ended (restored after the same
 * operator logs in again).
 * @type {{
 *   warnTimer: ReturnType<typeof setTimeout> | undefined,
 *   endTimer: ReturnType<typeof setTimeout> | undefined,
 *   saved: { username: string, hash: string, values: Record<string, string> } | null,
 * }}
 */
const session = { warnTimer: undefined, endTimer: undefined, saved: null };

function clearSessionTimers() {
  clearTimeout(session.warnTimer);
  clearTimeout(session.endTimer);
  const banner = $('session-warning');
  if (banner) banner.remove();
}

// Restarts the idle clock: the daemon ends the session `idle_timeout_s` after the last call.
function touchSession() {
  if (!state.me || !state.me.idle_timeout_s) return;
  clearSessionTimers();
  const idle = state.me.idle_timeout_s * 1000;
  session.warnTimer = setTimeout(showSessionWarning, Math.max(0, idle - WARN_BEFORE_MS));
  // Past the end the next call is refused; asking now brings the login up at once.
  session.endTimer = setTimeout(() => {
    call('auth.whoami', {}).catch(() => {});
  }, idle + 1000);
}

function showSessionWarning() {
  if (!state.me || $('session-warning')) return;
  document.body.appendChild(
    el(
      'div',
      { id: 'session-warning', class: 'session-warning', role: 'status' },
      el('span', { text: '长时间未操作，登录将在1分钟后超时。' }),
      el('button', {
        type: 'button',
        id: 'session-keep',
        text: '继续使用',
        onclick: () => call('auth.whoami', {}).catch(() => {}),
      }),
    ),
  );
}

// What the operator typed on the current page, by field id (never passwords).
function typedValues() {
  /** @type {Record<string, string>} */
  const values = {};
  /** @type {NodeListOf<HTMLInputElement>} */
  const inputs = $('page').querySelectorAll('input[id], select[id], textarea[id]');
  for (const input of inputs) {
    if (input.type !== 'password' && input.type !== 'file') values[input.id] = input.value;
  }
  return values;
}

function restoreTyped() {
  const saved = session.saved;
  session.saved = null;
  if (!saved || !state.me || saved.username !== state.me.username) return;
  for (const [id, value] of Object.entries(saved.values)) {
    const input = /** @type {HTMLInputElement | null} */ ($(id));
    if (input && $('page').contains(input)) input.value = value;
  }
}

onActivity(touchSession);

onUnauthenticated(() => {
  // Several calls may fail together: the session ends, and is announced, once.
  if (!state.me) return;
  const saved = { username: state.me.username, hash: location.hash, values: typedValues() };
  session.saved = saved;
  clearSessionTimers();
  setToken(null);
  closeDialog(null);
  showLogin('登录已超时，请重新登录。');
  $('login-user', HTMLInputElement).value = saved.username;
  $('login-password').focus();
});

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  try {
    const r = await call('auth.login', {
      username: $('login-user', HTMLInputElement).value.trim(),
      password: $('login-password', HTMLInputElement).value,
    });
    setToken(r.token);
    await boot();
  } catch (err) {
    const { message, action } = describe(err);
    $('login-error').textContent =
      message + (err.name === 'InvalidCredentials' ? '' : ' ' + action);
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await call('auth.logout', {});
  } catch (e) {
    /* the session may be over already */
  }
  setToken(null);
  showLogin('已退出登录。');
});

async function boot() {
  if (!getToken()) return showLogin();
  try {
    state.me = await call('auth.whoami', {});
  } catch (err) {
    setToken(null);
    return showLogin();
  }
  if (state.me.role === 'kiosk') {
    location.href = '/kiosk';
    return undefined;
  }
  const [flows, discover] = await Promise.all([
    call('flows.list', {}).catch(() => []),
    call('rpc.discover', {}).catch(() => ({ methods: [] })),
    loadVocabulary(),
    loadGroupRules(state.me.role === 'group_operator'),
  ]);
  state.flows = flows;
  const listed = /** @type {{ methods?: { name: string }[] }} */ (discover).methods;
  state.methods = new Set((listed || []).map((m) => m.name));
  $('operator').textContent =
    (state.me.display_name || state.me.username) + '（' + roleLabel(state.me.role) + '）';
  await loadReaders();
  // Once subscribed, the readers are read again: a card that came or went between the first
  // read and the subscription is shown as it is.
  state.stopEvents = subscribeEvents(onEvent, (open) => {
    $('readers').classList.toggle('offline', !open);
    if (open) loadReaders();
  });
  buildNav();
  const saved = session.saved;
  if (saved && saved.username === state.me.username && saved.hash && location.hash !== saved.hash) {
    history.replaceState(null, '', saved.hash);
  }
  route();
  restoreTyped();
  // Shown only now: never the previous session's page while this one is being built.
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  touchSession();
  return undefined;
}

// ---- navigation ----------------------------------------------------------------------------

const ALL = ['admin', 'teller', 'supervisor', 'auditor', 'group_operator'];
/**
 * The console's pages: who sees each (and when), and how it is drawn into the page element.
 * @type {{
 *   id: string,
 *   section: string,
 *   title: string,
 *   roles: string[],
 *   when?: () => boolean,
 *   render: (main: HTMLElement) => void,
 * }[]}
 */
const PAGES = [
  {
    id: 'etc-records',
    section: 'ETC业务',
    title: '充值记录',
    roles: ['teller', 'supervisor', 'auditor', 'admin'],
    render: pageRecords,
  },
  {
    id: 'etc-recharge',
    section: 'ETC业务',
    title: '充值',
    roles: ['teller', 'supervisor'],
    render: pageEtcRecharge,
  },
  {
    id: 'obu-issue',
    section: 'ETC业务',
    title: 'OBU发行',
    roles: ['teller', 'supervisor'],
    when: () => hasFlow('obu.issue'),
    render: pageObu,
  },
  {
    id: 'card',
    section: '卡片',
    title: '读卡',
    roles: ['teller', 'supervisor', 'auditor', 'admin'],
    render: pageCard,
  },
  {
    id: 'flows',
    section: '卡片',
    title: '其他业务',
    roles: ['teller', 'supervisor', 'admin'],
    when: () => pageFlowList().length > 0,
    render: pageFlows,
  },
  {
    id: 'group-recharge',
    section: '集团充值',
    title: '充值',
    roles: ['group_operator'],
    when: () => hasMethod('group.info'),
    render: pageGroupRecharge,
  },
  {
    id: 'group-orders',
    section: '集团充值',
    title: '充值查询',
    roles: ['group_operator'],
    when: () => hasMethod('group.orders'),
    render: (p) => pageGroupQuery(p, 'orders'),
  },
  {
    id: 'group-topup',
    section: '集团充值',
    title: '额度充值',
    roles: ['group_operator'],
    when: () => hasMethod('group.topup'),
    render: pageGroupTopUp,
  },
  {
    id: 'group-topups',
    section: '集团充值',
    title: '额度充值查询',
    roles: ['group_operator'],
    when: () => hasMethod('group.topups'),
    render: (p) => pageGroupQuery(p, 'topups'),
  },
  {
    id: 'audit-topups',
    section: '审核',
    title: '额度充值审核',
    roles: ['auditor'],
    when: () => hasMethod('group.audit.pending'),
    render: pageAuditTopUps,
  },
  {
    id: 'audit-refunds',
    section: '审核',
    title: '退款审核',
    roles: ['auditor'],
    when: () => hasMethod('group.audit.pending'),
    render: pageAuditRefunds,
  },
  {
    id: 'journal-open',
    section: '审核',
    title: '待核对圈存',
    roles: ['supervisor', 'auditor'],
    when: () => hasMethod('journal.open'),
    render: pageJournalOpen,
  },
  {
    id: 'operators',
    section: '系统',
    title: '操作员管理',
    roles: ['admin'],
    render: pageOperators,
  },
  {
    id: 'sim',
    section: '系统',
    title: '模拟读卡器',
    roles: ['admin'],
    when: () => hasMethod('sim.readers'),
    render: pageSim,
  },
  { id: 'password', section: '系统', title: '修改密码', roles: ALL, render: pagePassword },
];

const visiblePages = () => PAGES.filter((p) => p.roles.includes(role()) && (!p.when || p.when()));

function buildNav() {
  const nav = $('nav');
  nav.replaceChildren();
  let section = null;
  for (const p of visiblePages()) {
    if (p.section !== section) {
      section = p.section;
      nav.appendChild(el('div', { class: 'section', text: section }));
    }
    // A click on the page already shown opens it afresh (no hashchange would fire).
    nav.appendChild(
      el('a', {
        href: '#/' + p.id,
        id: 'nav-' + p.id,
        text: p.title,
        /** @param {MouseEvent} e */
        onclick: (e) => {
          if (location.hash === '#/' + p.id) {
            e.preventDefault();
            route();
          }
        },
      }),
    );
  }
}

function route() {
  if (!state.me) return;
  const pages = visiblePages();
  const id = location.hash.replace(/^#\//, '');
  const page = pages.find((p) => p.id === id) || pages[0];
  for (const a of $('nav').querySelectorAll('a'))
    a.classList.toggle('active', a.id === 'nav-' + page.id);
  const main = $('page');
  main.replaceChildren(el('h1', { text: page.title }));
  main.dataset.page = page.id;
  page.render(main);
}

router.route = route;
window.addEventListener('hashchange', route);

boot();
