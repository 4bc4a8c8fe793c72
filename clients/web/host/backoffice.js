// @ts-check
// The back office (后台) page app: login, the navigation of the pages the operator's role
// opens, and the router (`#<page id>`). Each page is a module of its own under pages/,
// exporting `page` ({ id, title, method, render }); adding a page is one module and one line
// in PAGES.

import { $, el } from '../lib/dom.js';
import { call, session, setToken, token } from './rpc.js';
import { state, may, errorBox } from './ui.js';
import { changePassword } from './pages/account.js';
import { page as topups } from './pages/topups.js';
import { page as refunds } from './pages/refunds.js';
import { page as review } from './pages/review.js';
import { page as records } from './pages/records.js';
import { page as operators } from './pages/operators.js';
import { page as sites } from './pages/sites.js';
import { page as audit } from './pages/audit.js';

/**
 * A page of the back office: shown when the operator may call `method`.
 * @typedef {{
 *   id: string,
 *   title: string,
 *   method: string,
 *   render: (main: HTMLElement) => void,
 * }} Page
 */

/** @type {Page[]} */
const PAGES = [topups, refunds, review, records, operators, sites, audit];

const visible = () => PAGES.filter((p) => may(p.method));

function route() {
  const pages = visible();
  const wanted = location.hash.replace(/^#/, '');
  const p = pages.find((x) => x.id === wanted) || pages[0];
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === '#' + (p ? p.id : ''));
  }
  const main = $('page');
  main.replaceChildren();
  if (!p) {
    main.append(el('p', { class: 'empty', text: '您的角色没有可用的后台页面。' }));
    return;
  }
  main.append(el('h1', { text: p.title }));
  p.render(main);
}

function showLogin() {
  state.me = null;
  $('app-view').hidden = true;
  $('login-view').hidden = false;
  $('login-user', HTMLInputElement).focus();
}

async function showApp() {
  state.me = await call('auth.whoami', {});
  const me = state.me;
  $('operator').textContent = me.display_name + '（' + me.role_label + '）';
  $('nav').replaceChildren(
    ...visible().map((p) => el('a', { href: '#' + p.id, id: 'nav-' + p.id, text: p.title })),
  );
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  route();
}

session.ended = () => {
  showLogin();
  $('login-error').textContent = '登录已超时或已在别处退出，请重新登录。';
};

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const error = $('login-error');
  error.textContent = '';
  const username = $('login-user', HTMLInputElement).value.trim();
  const password = $('login-password', HTMLInputElement);
  try {
    const r = await call('auth.login', { username, password: password.value });
    setToken(r.token);
    password.value = '';
    await showApp();
  } catch (err) {
    password.value = '';
    error.textContent = err.message;
  }
});

$('logout').addEventListener('click', async () => {
  try {
    await call('auth.logout', {});
  } catch (err) {
    // Logged out here whatever the host answered.
  }
  setToken(null);
  location.hash = '';
  showLogin();
});

$('change-password').addEventListener('click', () => changePassword());

window.addEventListener('hashchange', () => {
  if (state.me) route();
});

if (token()) {
  showApp().catch((err) => {
    showLogin();
    if (err.name !== 'NotLoggedIn' && err.name !== 'SessionEnded') errorBox(err, '无法打开后台');
  });
} else {
  showLogin();
}
