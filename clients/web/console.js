// The teller console: login, role-aware navigation, live reader and card status, the ETC pages
// (充值记录, 圈存, 修改圈存状态, 充值, OBU发行), the group pages (充值, 充值查询, 额度充值,
// 额度充值查询), the auditor's pages, operator administration and 修改密码. Everything the
// operator reads is zh-CN; every action is a JSON-RPC call (see api.js).
'use strict';

(() => {
  const { el, call, describe } = Cardd;
  const $ = (id) => document.getElementById(id);

  // The vocabulary (roles, plate colours, query periods …) and the group recharge rules come
  // from cardd (system.vocabulary, group.rules): never copied here.
  const vocab = { roles: [], plate_colours: [], order_statuses: [], topup_statuses: [], query_periods: [] };
  let groupRules = null;
  const roleLabel = (code) => (vocab.roles.find((r) => r.code === code) || { label: code }).label;
  const QUOTA_NOTE = '充值扣除集团可用额度；额度不足时请先进行额度充值并等待审核。';
  const REFUND_NOTE = '特别说明：充值失败的订单，系统审核后会在1-3个工作日内将金额退回到额度中。';
  // The rules of 集团充值 as the page lists them, in the rules' own figures.
  function groupRuleLines() {
    const r = groupRules;
    const figures = r ? ['充值金额为' + r.step_yuan + '元的整数倍，充值金额不能小于' + r.min_yuan + '元。', '充值后卡内金额不能超' + r.card_balance_max_yuan + '元。'] : [];
    return [...figures, QUOTA_NOTE, REFUND_NOTE];
  }

  const state = { me: null, flows: [], methods: new Set(), readers: new Map(), stopEvents: null };

  // ---- dialogs -------------------------------------------------------------------------------

  let dialogResolve = null;
  let dialogCancel = null;

  // Shows the modal: { title, message, body (element), buttons: [[label, value, class]] }.
  // Resolves with the value of the button pressed. Focus starts on 取消 when there is one (so
  // Enter never confirms a money question by default), otherwise on the last button; Esc
  // answers as 取消 (or closes a notice).
  function dialog(opts) {
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
    const cancel = list.find(([label]) => label === '取消');
    dialogCancel = cancel ? [cancel[1]] : list.length === 1 && typeof list[0][1] !== 'function' ? [list[0][1]] : null;
    return new Promise((resolve) => {
      dialogResolve = resolve;
      for (const [label, value, cls] of list) {
        buttons.appendChild(el('button', {
          type: 'button', class: cls || '', text: label, 'data-answer': String(value),
          onclick: () => closeDialog(typeof value === 'function' ? value() : value),
        }));
      }
      const start = cancel ? buttons.querySelector('button[data-answer="' + String(cancel[1]) + '"]') : buttons.querySelector('button:last-child');
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

  function closeDialog(value) {
    $('dialog').hidden = true;
    dialogCancel = null;
    const resolve = dialogResolve;
    dialogResolve = null;
    if (resolve) resolve(value);
  }

  const confirmBox = (message, title) => dialog({ title: title || '请确认', message, buttons: [['取消', false, 'secondary'], ['确定', true]] });
  const alertBox = (message, title, body) => dialog({ title: title || '提示', message, body, buttons: [['确定', true]] });
  function progressBox(message) {
    dialog({ title: '请稍候', message, body: el('div', { class: 'spinner' }), buttons: [] });
  }

  // An error in a teller's words: what happened and what to do next.
  function errorBox(err, title, extra, messageOverride, actionOverride) {
    // The login screen says the session ended; no second message over it.
    if (err && err.name === 'Unauthenticated') return Promise.resolve(null);
    const described = describe(err);
    const message = messageOverride || described.message;
    const action = actionOverride || described.action;
    const body = el('div', {}, extra || null, action ? el('p', { class: 'action', text: '处理方法：' + action }) : null);
    return dialog({ title: title || '操作未完成', message, body, buttons: [['确定', true]] });
  }

  // Asks for a line of text (a reason); null when cancelled or empty.
  async function askText(message, label) {
    const input = el('input', { id: 'dialog-input', maxlength: '200', onkeydown: (e) => {
      if (e.key === 'Enter') { e.preventDefault(); closeDialog(input.value.trim()); }
    } });
    const value = await dialog({
      title: '请填写', message, body: el('label', { class: 'field' }, label, input),
      buttons: [['取消', null, 'secondary'], ['确定', () => input.value.trim()]],
    });
    return value ? value : null;
  }

  // ---- small builders ------------------------------------------------------------------------

  const yuan = (v) => (v === null || v === undefined || v === '' ? '—' : v + ' 元');
  const when = (v) => (v ? String(v).replace('T', ' ').replace(/(\.\d+)?(Z|[+-]\d\d:\d\d)$/, '') : '—');

  function table(columns, rows, id) {
    const head = el('tr', {}, columns.map((c) => el('th', { text: c[0] })));
    const body = rows.map((r) => el('tr', {}, columns.map((c) => {
      const v = c[1](r);
      return el('td', {}, v instanceof Node ? v : String(v === null || v === undefined ? '—' : v));
    })));
    return el('table', { class: 'grid', id }, el('thead', {}, head), el('tbody', {}, body));
  }

  function fields(pairs, id) {
    return el('dl', { class: 'fields', id }, pairs.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v === null || v === undefined || v === '' ? '—' : String(v) })]));
  }

  function field(label, input) {
    return el('label', { class: 'field' }, el('span', { text: label }), input);
  }

  function colourSelect(id) {
    return el('select', { id }, vocab.plate_colours.map((c) => el('option', { value: String(c.code), text: c.label })));
  }

  // What kind of reader this is, from its capabilities: an OBU programmer, a contactless-only
  // city-card reader, or a contact (ETC user card) reader.
  const isObuReader = (r) => !!(r.capabilities && r.capabilities.obu_channel);
  const isCityReader = (r) => !isObuReader(r) && !!(r.capabilities && r.capabilities.contactless && !r.capabilities.contact);
  const isEtcReader = (r) => !isObuReader(r) && !isCityReader(r);

  // The reader's name as a person reads it: the configured name when it is Chinese, otherwise
  // what it is for (a hardware product name or an id is not something a teller should parse).
  function readerLabel(r) {
    if (/[\u4e00-\u9fff]/.test(r.name || '')) return r.name;
    if (isObuReader(r)) return 'OBU发行器';
    if (isCityReader(r)) return '城市一卡通读卡器';
    return 'ETC用户卡读卡器';
  }

  // The readers this operator's role works with: a group operator the city-card readers, the
  // counter the ETC card readers and OBU programmers; auditors and administrators see all.
  function roleReaders() {
    const all = [...state.readers.values()];
    let mine = all;
    if (role() === 'group_operator') mine = all.filter(isCityReader);
    else if (role() === 'teller' || role() === 'supervisor') mine = all.filter((r) => !isCityReader(r));
    return mine.length ? mine : all;
  }

  function readerSelect(id, prefer) {
    const readers = roleReaders();
    const chosen = readers.find(prefer) || readers[0];
    return el('select', { id }, readers.map((r) => el('option', { value: r.id, text: readerLabel(r), selected: r === chosen })));
  }

  const hasFlow = (name) => state.flows.some((f) => f.name === name);
  const hasMethod = (name) => state.methods.has(name);
  const role = () => (state.me ? state.me.role : '');

  // ---- login, session ------------------------------------------------------------------------

  function showLogin(message) {
    clearSessionTimers();
    if (state.stopEvents) state.stopEvents();
    state.stopEvents = null;
    state.me = null;
    $('app-view').hidden = true;
    $('login-view').hidden = false;
    $('login-error').textContent = message || '';
    $('login-password').value = '';
    $('login-user').focus();
  }

  // ---- session idle timeout: a warning a minute before, what was typed kept over a re-login --

  const WARN_BEFORE_MS = 60 * 1000;
  const session = { warnTimer: null, endTimer: null, saved: null };

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
    session.endTimer = setTimeout(() => { call('auth.whoami', {}).catch(() => {}); }, idle + 1000);
  }

  function showSessionWarning() {
    if (!state.me || $('session-warning')) return;
    document.body.appendChild(el('div', { id: 'session-warning', class: 'session-warning', role: 'status' },
      el('span', { text: '长时间未操作，登录将在1分钟后超时。' }),
      el('button', { type: 'button', id: 'session-keep', text: '继续使用', onclick: () => call('auth.whoami', {}).catch(() => {}) })));
  }

  // What the operator typed on the current page, by field id (never passwords).
  function typedValues() {
    const values = {};
    for (const input of $('page').querySelectorAll('input[id], select[id], textarea[id]')) {
      if (input.type !== 'password' && input.type !== 'file') values[input.id] = input.value;
    }
    return values;
  }

  function restoreTyped() {
    const saved = session.saved;
    session.saved = null;
    if (!saved || !state.me || saved.username !== state.me.username) return;
    for (const [id, value] of Object.entries(saved.values)) {
      const input = $(id);
      if (input && $('page').contains(input)) input.value = value;
    }
  }

  Cardd.onActivity(touchSession);

  Cardd.onUnauthenticated(() => {
    // Several calls may fail together: the session ends, and is announced, once.
    if (!state.me) return;
    session.saved = { username: state.me.username, hash: location.hash, values: typedValues() };
    clearSessionTimers();
    Cardd.setToken(null);
    closeDialog(null);
    showLogin('登录已超时，请重新登录。');
    $('login-user').value = session.saved.username;
    $('login-password').focus();
  });

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    $('login-error').textContent = '';
    try {
      const r = await call('auth.login', { username: $('login-user').value.trim(), password: $('login-password').value });
      Cardd.setToken(r.token);
      await boot();
    } catch (err) {
      const { message, action } = describe(err);
      $('login-error').textContent = message + (err.name === 'InvalidCredentials' ? '' : ' ' + action);
    }
  });

  $('logout').addEventListener('click', async () => {
    try { await call('auth.logout', {}); } catch (e) { /* the session may be over already */ }
    Cardd.setToken(null);
    showLogin('已退出登录。');
  });

  async function boot() {
    if (!Cardd.token()) return showLogin();
    try {
      state.me = await call('auth.whoami', {});
    } catch (err) {
      Cardd.setToken(null);
      return showLogin();
    }
    if (state.me.role === 'kiosk') {
      location.href = '/kiosk';
      return undefined;
    }
    const [flows, discover, words, rules] = await Promise.all([
      call('flows.list', {}).catch(() => []),
      call('rpc.discover', {}).catch(() => ({ methods: [] })),
      call('system.vocabulary', {}).catch(() => null),
      state.me.role === 'group_operator' ? call('group.rules', {}).catch(() => null) : null,
    ]);
    if (words) Object.assign(vocab, words);
    groupRules = rules;
    state.flows = flows;
    state.methods = new Set((discover.methods || []).map((m) => m.name));
    $('operator').textContent = (state.me.display_name || state.me.username) + '（' + roleLabel(state.me.role) + '）';
    await loadReaders();
    // Once subscribed, the readers are read again: a card that came or went between the first
    // read and the subscription is shown as it is.
    state.stopEvents = Cardd.subscribeEvents(onEvent, (open) => {
      $('readers').classList.toggle('offline', !open);
      if (open) loadReaders();
    });
    buildNav();
    if (session.saved && session.saved.username === state.me.username && session.saved.hash && location.hash !== session.saved.hash) {
      history.replaceState(null, '', session.saved.hash);
    }
    route();
    restoreTyped();
    // Shown only now: never the previous session's page while this one is being built.
    $('login-view').hidden = true;
    $('app-view').hidden = false;
    touchSession();
    return undefined;
  }

  // ---- readers and cards, live ---------------------------------------------------------------

  async function loadReaders() {
    let list = [];
    try { list = await call('readers.list', {}); } catch (e) { list = []; }
    state.readers = new Map(list.map((r) => [r.id, r]));
    for (const r of list) if (r.card_present) await refreshCard(r.id, false);
    renderReaders();
  }

  async function refreshCard(readerId, render) {
    const r = state.readers.get(readerId);
    if (!r) return;
    r.card = null;
    if (r.card_present) {
      try { r.card = await call('card.summary', { reader_id: readerId }); } catch (e) { r.card = null; }
    }
    if (render !== false) renderReaders();
  }

  function renderReaders() {
    const box = $('readers');
    box.replaceChildren(...roleReaders().map((r) => {
      let text = readerLabel(r) + '：' + (r.card_present ? '有卡' : '无卡');
      if (r.card_present && r.card) {
        text += ' · ' + r.card.card_number;
        if (r.card.balance !== null && r.card.balance !== undefined) text += ' · 余额 ' + r.card.balance + ' 元';
      }
      return el('span', { class: 'reader ' + (r.card_present ? 'present' : 'absent'), 'data-reader': r.id, title: readerLabel(r), text });
    }));
  }

  function onEvent(ev) {
    document.dispatchEvent(new CustomEvent('cardd-reader-event', { detail: ev }));
    const r = state.readers.get(ev.reader_id);
    switch (ev.type) {
      case 'card_inserted':
        if (r) { r.card_present = true; refreshCard(ev.reader_id); }
        break;
      case 'card_removed':
        if (r) { r.card_present = false; r.card = null; renderReaders(); }
        break;
      case 'reader_added':
      case 'reader_removed':
        loadReaders();
        break;
      case 'load_resolved':
        if (r) refreshCard(ev.reader_id);
        break;
      default:
        break;
    }
  }

  // ---- navigation ----------------------------------------------------------------------------

  const ALL = ['admin', 'teller', 'supervisor', 'auditor', 'group_operator'];
  const PAGES = [
    { id: 'etc-records', section: 'ETC业务', title: '充值记录', roles: ['teller', 'supervisor', 'auditor', 'admin'], render: pageRecords },
    { id: 'etc-recharge', section: 'ETC业务', title: '充值', roles: ['teller', 'supervisor'], render: pageEtcRecharge },
    { id: 'obu-issue', section: 'ETC业务', title: 'OBU发行', roles: ['teller', 'supervisor'], when: () => hasFlow('obu.issue'), render: pageObu },
    { id: 'card', section: '卡片', title: '读卡', roles: ['teller', 'supervisor', 'auditor', 'admin'], render: pageCard },
    { id: 'flows', section: '卡片', title: '其他业务', roles: ['teller', 'supervisor', 'admin'], when: () => pageFlowList().length > 0, render: pageFlows },
    { id: 'group-recharge', section: '集团充值', title: '充值', roles: ['group_operator'], when: () => hasMethod('group.info'), render: pageGroupRecharge },
    { id: 'group-orders', section: '集团充值', title: '充值查询', roles: ['group_operator'], when: () => hasMethod('group.orders'), render: (p) => pageGroupQuery(p, 'orders') },
    { id: 'group-topup', section: '集团充值', title: '额度充值', roles: ['group_operator'], when: () => hasMethod('group.topup'), render: pageGroupTopUp },
    { id: 'group-topups', section: '集团充值', title: '额度充值查询', roles: ['group_operator'], when: () => hasMethod('group.topups'), render: (p) => pageGroupQuery(p, 'topups') },
    { id: 'audit-topups', section: '审核', title: '额度充值审核', roles: ['auditor'], when: () => hasMethod('group.audit.pending'), render: pageAuditTopUps },
    { id: 'audit-refunds', section: '审核', title: '退款审核', roles: ['auditor'], when: () => hasMethod('group.audit.pending'), render: pageAuditRefunds },
    { id: 'journal-open', section: '审核', title: '待核对圈存', roles: ['supervisor', 'auditor'], when: () => hasMethod('journal.open'), render: pageJournalOpen },
    { id: 'operators', section: '系统', title: '操作员管理', roles: ['admin'], render: pageOperators },
    { id: 'sim', section: '系统', title: '模拟读卡器', roles: ['admin'], when: () => hasMethod('sim.readers'), render: pageSim },
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
      nav.appendChild(el('a', { href: '#/' + p.id, id: 'nav-' + p.id, text: p.title, onclick: (e) => {
        if (location.hash === '#/' + p.id) { e.preventDefault(); route(); }
      } }));
    }
  }

  function route() {
    if (!state.me) return;
    const pages = visiblePages();
    const id = location.hash.replace(/^#\//, '');
    const page = pages.find((p) => p.id === id) || pages[0];
    for (const a of $('nav').querySelectorAll('a')) a.classList.toggle('active', a.id === 'nav-' + page.id);
    const main = $('page');
    main.replaceChildren(el('h1', { text: page.title }));
    main.dataset.page = page.id;
    page.render(main);
  }

  window.addEventListener('hashchange', route);

  // ---- ETC: 充值记录, details, 圈存, 修改圈存状态 -----------------------------------------------

  const mayLoad = () => ['teller', 'supervisor'].includes(role());

  function pageRecords(main) {
    const plate = el('input', { id: 'rec-plate', maxlength: '16', placeholder: '如 陕A12345', required: true });
    const colour = colourSelect('rec-colour');
    const from = el('input', { id: 'rec-from', type: 'date' });
    const to = el('input', { id: 'rec-to', type: 'date' });
    const reader = readerSelect('rec-reader', isEtcReader);
    const results = el('div', { id: 'rec-results' });
    const details = el('div', { id: 'rec-details' });
    let page = 1;
    const search = async () => {
      if (!plate.value.trim()) { plate.focus(); return; }
      if (from.value && to.value && from.value > to.value) {
        results.replaceChildren();
        alertBox('充值开始日期（' + from.value + '）晚于充值结束日期（' + to.value + '），请重新选择时间。', '请修改查询时间');
        return;
      }
      const params = { plate: plate.value.trim(), plate_colour: Number(colour.value), page, page_size: 20 };
      if (from.value) params.from = from.value;
      if (to.value) params.to = to.value;
      try {
        const r = await call('etc.records.query', params);
        results.replaceChildren(recordsTable(r, (n) => { page = n; search(); }));
      } catch (err) {
        results.replaceChildren();
        errorBox(err, '查询失败');
      }
    };
    const form = el('form', { class: 'toolbar', id: 'rec-form', onsubmit: (e) => { e.preventDefault(); page = 1; details.replaceChildren(); search(); } },
      field('车牌号', plate), field('车牌颜色', colour), field('充值开始日期', from), field('充值结束日期', to),
      el('button', { type: 'submit', id: 'rec-query', text: '查询' }));
    main.append(form, el('div', { class: 'toolbar' }, field('读卡器（圈存、核对卡片）', reader)), results, details);

    function recordsTable(r, goto) {
      const rows = r.records || [];
      if (rows.length === 0) return el('p', { class: 'empty', text: '没有符合条件的充值记录。' });
      const actions = (rec) => el('span', { class: 'row-actions' },
        el('button', { type: 'button', class: 'link', text: '详情', 'data-action': 'details', onclick: () => showDetails(rec.record_id) }),
        rec.status === 'not_loaded' && mayLoad() ? el('button', { type: 'button', text: '圈存', 'data-action': 'load', onclick: () => doLoad(rec.record_id) }) : null);
      const grid = table([
        // Narrow enough for 1024 px: plate and colour share a column, amounts carry their unit
        // in the heading, 充值渠道 is in the details.
        ['记录编号', (x) => x.record_id], ['用户卡卡号', (x) => x.card_number], ['车牌号（车牌颜色）', (x) => x.plate + '（' + x.plate_colour_label + '）'],
        ['充值前金额（元）', (x) => x.balance_before], ['充值金额（元）', (x) => x.amount], ['充值后金额（元）', (x) => x.balance_after],
        ['充值时间', (x) => when(x.recharged_at)],
        ['充值状态', (x) => el('span', { class: 'status ' + x.status, text: x.status_label })], ['操作', actions],
      ], rows, 'rec-table');
      for (const [i, tr] of [...grid.tBodies[0].rows].entries()) tr.dataset.record = rows[i].record_id;
      const pages = Math.max(1, Math.ceil(r.total / r.page_size));
      const pager = el('div', { class: 'pager' }, '共 ' + r.total + ' 条，第 ' + r.page + '/' + pages + ' 页 ',
        r.page > 1 ? el('button', { type: 'button', class: 'secondary', text: '上一页', onclick: () => goto(r.page - 1) }) : null,
        r.page < pages ? el('button', { type: 'button', class: 'secondary', text: '下一页', onclick: () => goto(r.page + 1) }) : null);
      return el('div', {}, grid, pager);
    }

    async function showDetails(recordId) {
      let rec;
      try { rec = await call('etc.records.get', { record_id: recordId }); } catch (err) { errorBox(err, '无法读取充值记录'); return; }
      const history = table([
        ['时间', (h) => when(h.at)], ['操作', (h) => h.action_label], ['原状态', (h) => h.from_label], ['新状态', (h) => h.to_label],
        ['操作员', (h) => h.operator_name || h.operator], ['原因', (h) => h.reason], ['交易编号', (h) => h.txn_id],
      ], rec.history || [], 'rec-history');
      const buttons = el('div', { class: 'buttons-left' },
        rec.status === 'not_loaded' && mayLoad() ? el('button', { type: 'button', id: 'det-load', text: '圈存', onclick: () => doLoad(rec.record_id) }) : null,
        rec.status !== 'not_loaded' && mayLoad() ? el('button', { type: 'button', id: 'det-unload', class: 'warn', text: '未圈存', onclick: () => markNotLoaded(rec) }) : null,
        el('button', { type: 'button', id: 'det-evidence', class: 'secondary', text: '卡片证据', onclick: () => showEvidence(rec) }));
      details.replaceChildren(el('section', { class: 'panel', id: 'record-panel', 'data-record': rec.record_id },
        el('h2', { text: '充值记录详情' }),
        el('p', { class: 'hint', text: '请仔细核对车辆信息、卡上的余额以及充值后的金额和圈存状态。' }),
        fields([
          ['记录编号', rec.record_id], ['用户卡卡号', rec.card_number], ['车牌号', rec.plate], ['车牌颜色', rec.plate_colour_label],
          ['充值前的金额', yuan(rec.balance_before)], ['充值金额', yuan(rec.amount)], ['充值后的金额', yuan(rec.balance_after)],
          ['充值时间', when(rec.recharged_at)], ['充值渠道', rec.channel], ['充值状态', rec.status_label], ['圈存时间', when(rec.loaded_at)],
        ], 'rec-fields'),
        buttons, el('h3', { text: '处理记录' }), history));
      details.scrollIntoView();
    }

    async function doLoad(recordId) {
      const readerId = reader.value;
      const slot = 'etc.load:' + recordId;
      progressBox('正在查询充值记录……');
      let run;
      try {
        run = await Cardd.startFlow(slot, 'etc.load', { record_id: recordId }, readerId);
        run = await Cardd.followRun(run.run_id, {
          progress: (m) => progressBox(m),
          prompt: async (p) => {
            const answer = await promptAnswer(p);
            progressBox('正在处理……');
            return answer;
          },
        });
      } catch (err) {
        await errorBox(err, '圈存未完成');
        return;
      }
      Cardd.forgetFlow(slot);
      await showRunOutcome(run, '圈存');
      refreshCard(readerId);
      search();
      showDetails(recordId);
    }

    // 修改圈存状态: the seed's question, then the daemon decides from the card on the reader. A
    // supervisor whom the card cannot prove right is asked for a reason and the call repeated.
    async function markNotLoaded(rec) {
      const sure = await confirmBox('确定将充值记录改为【未圈存】的状态吗？');
      if (!sure) return;
      const params = { record_id: rec.record_id, reader_id: reader.value };
      const evidenceBox = (evidence) => (evidence ? el('div', { class: 'evidence', id: 'evidence' },
        el('h3', { text: '读卡核对结果' + (evidence.card_checked ? '' : '（未读卡）') }), el('p', { text: evidence.explanation }),
        evidence.card_balance ? el('p', { text: '卡内余额：' + yuan(evidence.card_balance) }) : null) : null);
      for (;;) {
        try {
          await call('etc.records.mark_not_loaded', params);
          await alertBox('修改圈存状态成功！请进行圈存操作', '修改圈存状态');
          break;
        } catch (err) {
          const detail = (err.data && err.data.detail) || {};
          const evidence = detail.evidence;
          // No card on the reader: a supervisor may go on without it (the daemon then asks
          // for a reason); a teller puts the card on the reader.
          if (err.name === 'NoCard' && role() === 'supervisor' && params.reader_id) {
            const without = await confirmBox('读卡器上没有该记录的卡片。不读卡，由主管核对后填写原因修改圈存状态吗？', '没有卡片');
            if (!without) break;
            delete params.reader_id;
            continue;
          }
          if (err.name === 'CardEvidenceRequired' && detail.reason_required && !params.reason) {
            const reason = await askText((evidence ? evidence.explanation + '。' : '卡片不能证明该笔圈存未写入。') + '请填写修改原因。', '修改原因');
            if (!reason) break;
            params.reason = reason;
            continue;
          }
          let message = null;
          let action = null;
          if (err.name === 'LoadLanded') message = '不能改为未圈存：读卡核对结果如下。';
          if (err.name === 'CardEvidenceRequired' && evidence && evidence.card_checked) {
            message = '不能改为未圈存：卡片不能证明该笔圈存未写入。';
            action = '请主管核对卡片余额和交易记录后填写原因办理。';
          }
          await errorBox(err, '不能修改圈存状态', evidenceBox(evidence), message, action);
          break;
        }
      }
      search();
      showDetails(rec.record_id);
    }

    async function showEvidence(rec) {
      try {
        const r = await call('etc.records.evidence', { record_id: rec.record_id, reader_id: reader.value });
        const ev = r.evidence;
        const verdict = { landed: '已写入卡内', not_landed: '未写入卡内', unknown: '无法确定' }[ev.verdict] || ev.verdict;
        await alertBox(ev.explanation, '卡片证据：' + verdict, fields([['卡内余额', yuan(ev.card_balance)], ['已读卡核对', ev.card_checked ? '是' : '否']]));
      } catch (err) { await errorBox(err, '无法读取卡片证据'); }
    }
  }

  // A flow's question as a dialog: confirm → true/false; choose → one of the choices.
  async function promptAnswer(p) {
    if (p.kind === 'choose') {
      const list = el('div', { class: 'choices' });
      const value = dialog({ title: '请选择', message: p.message, body: list, buttons: [['取消', null, 'secondary']] });
      for (const c of p.choices) list.appendChild(el('button', { type: 'button', class: 'choice', text: c, onclick: () => closeDialog(c) }));
      const chosen = await value;
      if (chosen === null) throw new Cardd.ApiError(0, '已取消', { error: 'Cancelled' });
      return chosen;
    }
    return confirmBox(p.message, '请确认');
  }

  // The end of a run: the flow's message with its figures, or its failure with what to do.
  async function showRunOutcome(run, what) {
    if (run.state === 'succeeded') {
      const r = run.result || {};
      const pairs = [
        ['订单编号', r.order_id], ['卡号', r.card_number], ['车牌号', r.plate],
        ['圈存前余额', r.balance_before !== undefined && what === '圈存' ? yuan(r.balance_before) : undefined],
        ['圈存金额', r.amount !== undefined && what === '圈存' ? yuan(r.amount) : undefined],
        ['圈存后余额', r.balance_after !== undefined && what === '圈存' ? yuan(r.balance_after) : undefined],
        ['交易验证码', r.tac],
      ].filter(([, v]) => v !== undefined && v !== null);
      return alertBox(r.message || what + '成功！', what + '结果', pairs.length ? fields(pairs, 'run-result') : null);
    }
    const failure = run.failure || { message: '业务未完成' };
    const loads = run.state === 'interrupted' && Array.isArray(run.loads) ? run.loads : [];
    const outcomeZh = { credited: '已写入卡内', not_credited: '未写入卡内', unknown: '结果待确认' };
    const unknown = loads.some((l) => l.outcome === 'unknown');
    const action = run.state !== 'interrupted'
      ? '请按提示处理后重新办理；如卡片在办理中被移开，请将同一张卡片放回读卡器，系统会先核对卡片，不会重复圈存。'
      : unknown
        ? '请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值。'
        : loads.some((l) => l.outcome === 'credited')
          ? '服务曾中断，但圈存已写入卡内，请勿重复充值。'
          : '服务曾中断：请将同一张卡片放回读卡器后重新查询记录，系统会按卡片核对结果，不会重复圈存。';
    const body = [el('p', { class: 'action', text: '处理方法：' + action })];
    loads.forEach((l, i) => body.push(fields([
      ['圈存交易', l.txn_id], ['卡号', l.card_number], ['圈存金额', yuan(l.amount)],
      ['圈存结果', outcomeZh[l.outcome] || l.outcome],
      ['圈存后余额', l.balance_after ? yuan(l.balance_after) : undefined], ['交易验证码', l.tac],
    ].filter(([, v]) => v !== undefined && v !== null), 'run-load-' + (i + 1))));
    return dialog({ title: what + '未完成', message: failure.message, body: el('div', {}, body), buttons: [['确定', true]] });
  }

  // ---- ETC: 充值 (a payment into a vehicle account) ----------------------------------------

  function pageEtcRecharge(main) {
    const plate = el('input', { id: 'rc-plate', maxlength: '16', required: true });
    const colour = colourSelect('rc-colour');
    const amount = el('input', { id: 'rc-amount', inputmode: 'decimal', required: true, placeholder: '如 200.00' });
    const channel = el('select', { id: 'rc-channel' }, ['银行柜台', '网上银行', '手机银行'].map((c) => el('option', { value: c, text: c })));
    const out = el('div', { id: 'rc-result' });
    main.append(el('p', { class: 'hint', text: '用户付款后在此登记充值，生成一条【未圈存】的充值记录；用户卡到读卡器上后在【充值记录】中圈存。' }),
      el('form', { class: 'form', onsubmit: async (e) => {
        e.preventDefault();
        if (!/^\d+(\.\d{1,2})?$/.test(amount.value.trim())) { alertBox('充值金额应为元，最多两位小数，例如 200.00。', '金额格式不对'); return; }
        const sure = await confirmBox('车牌号：' + plate.value.trim() + '（' + colour.selectedOptions[0].text + '）。充值金额：' + amount.value.trim() + '元。确认充值？');
        if (!sure) return;
        try {
          const r = await call('etc.recharge', { plate: plate.value.trim(), plate_colour: Number(colour.value), amount: amount.value.trim(), channel: channel.value });
          out.replaceChildren(el('section', { class: 'panel' }, el('h2', { text: '充值成功' }),
            fields([['记录编号', r.record_id], ['用户卡卡号', r.card_number], ['充值金额', yuan(r.amount)], ['充值状态', r.status_label]])));
        } catch (err) { errorBox(err, '充值未完成'); }
      } }, field('车牌号', plate), field('车牌颜色', colour), field('充值金额（元）', amount), field('充值渠道', channel),
      el('button', { type: 'submit', text: '确认充值' })), out);
  }

  // ---- flows by their parameter schema (OBU发行, other flows) --------------------------------

  function flowForm(flow, readerPrefer, done) {
    const schema = flow.params || {};
    const props = schema.properties || {};
    const required = new Set(schema.required || []);
    const inputs = {};
    const form = el('form', { class: 'form', id: 'flow-form' });
    form.appendChild(el('p', { class: 'hint', text: flow.description || '' }));
    const reader = readerSelect('flow-reader', readerPrefer);
    form.appendChild(field('读卡器', reader));
    // Required parameters first (JSON Schema keeps no order); the optional ones folded away.
    const optional = el('div', { class: 'grid2' });
    for (const name of Object.keys(props)) {
      const p = props[name];
      let input;
      if (name === 'plate_colour') input = colourSelect('flow-' + name);
      else input = el('input', { id: 'flow-' + name, name, required: required.has(name), inputmode: p.type === 'integer' ? 'numeric' : null });
      inputs[name] = [input, p];
      if (required.has(name)) form.appendChild(field(p.title || name, input));
      else optional.appendChild(field(p.title || name, input));
    }
    if (optional.children.length) form.appendChild(el('details', { id: 'flow-optional' }, el('summary', { text: '更多信息（选填）' }), optional));
    form.appendChild(el('button', { type: 'submit', id: 'flow-start', text: '开始' + flow.title }));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const params = {};
      for (const [name, [input, p]] of Object.entries(inputs)) {
        const v = input.value.trim();
        if (v === '') continue;
        params[name] = p.type === 'integer' ? Number(v) : v;
      }
      const slot = flow.name + ':' + JSON.stringify(params);
      progressBox('正在' + flow.title + '……');
      let run;
      try {
        run = await Cardd.startFlow(slot, flow.name, params, reader.value);
        run = await Cardd.followRun(run.run_id, { progress: (m) => progressBox(m), prompt: async (p) => { const a = await promptAnswer(p); progressBox('正在处理……'); return a; } });
      } catch (err) { await errorBox(err, flow.title + '未完成'); return; }
      Cardd.forgetFlow(slot);
      refreshCard(reader.value);
      if (done) {
        closeDialog(null);
        done(run);
      } else {
        showRunOutcome(run, flow.title);
      }
    });
    return form;
  }

  function pageObu(main) {
    const flow = state.flows.find((f) => f.name === 'obu.issue');
    const out = el('div', { id: 'obu-result' });
    main.append(flowForm(flow, (r) => r.capabilities && r.capabilities.obu_channel, async (run) => {
      if (run.state !== 'succeeded') { showRunOutcome(run, 'OBU发行'); return; }
      const r = run.result || {};
      if (r.status !== 'ok') { alertBox(r.message || '已取消OBU发行', 'OBU发行'); return; }
      const plan = r.plan || r;
      const vehicle = plan.vehicle || plan;
      const colour = vehicle.plate_colour && typeof vehicle.plate_colour === 'object' ? vehicle.plate_colour.label : vehicle.plate_colour_label;
      const list = (v) => (Array.isArray(v) ? v.join('、') : v);
      out.replaceChildren(el('section', { class: 'panel success', id: 'obu-success' }, el('h2', { text: r.message || 'OBU发行成功！' }),
        fields([
          ['OBU号', plan.obu_number], ['车牌号', vehicle.plate ? vehicle.plate + (colour ? '（' + colour + '）' : '') : null],
          ['车型', vehicle.vehicle_class_label],
          ['签约日期', r.signed_date], ['有效期至', r.expiry_date], ['已写入', list(r.written_labels)],
          ['读回核对', list((r.verified || []).map((v) => ({ system_info: '系统信息', vehicle_info: '车辆信息' }[v] || v))) + '（逐字节一致）'], ['激活状态', r.activated === undefined ? null : (r.activated ? '已激活' : '未激活')],
        ], 'obu-fields')));
      out.scrollIntoView();
    }), out);
  }

  // Flows a role may not start from this page: `card.load` credits a card with no payment
  // behind it, so it is an administrator's test mode, and 圈存 at the counter goes through
  // 充值记录 (`etc.load`, tied to the paid record).
  const FLOW_TITLES = { 'card.load': '测试圈存（无资金来源）' };
  const flowTitle = (f) => FLOW_TITLES[f.name] || f.title;
  const pageFlowList = () => state.flows.filter((f) => (f.name === 'card.load' ? role() === 'admin' : true) && f.name !== 'obu.issue');

  function pageFlows(main) {
    const list = el('div', { class: 'cards' });
    const host = el('div', { id: 'flow-host' });
    for (const f of pageFlowList()) {
      const flow = Object.assign({}, f, { title: flowTitle(f) });
      list.appendChild(el('button', { type: 'button', class: 'secondary', 'data-flow': f.name, text: flow.title, onclick: () => host.replaceChildren(el('h2', { text: flow.title }), flowForm(flow, () => false)) }));
    }
    main.append(list, host);
  }

  // ---- 读卡 ----------------------------------------------------------------------------------

  function pageCard(main) {
    const reader = readerSelect('card-reader', mayLoad() ? isEtcReader : (r) => r.card_present);
    const out = el('div', { id: 'card-result' });
    const read = async () => {
      try {
        const c = await call('card.summary', { reader_id: reader.value });
        out.replaceChildren(fields([
          ['卡片类型', c.kind_label], ['卡种', c.card_type], ['卡号', c.card_number], ['车牌号', c.plate], ['车牌颜色', c.plate_colour_label],
          ['卡内余额', yuan(c.balance)], ['联机交易序号', c.online_atc], ['启用日期', c.start_date], ['有效期至', c.expiry_date],
          ['说明', (c.notes || []).join('；')],
        ], 'card-fields'));
      } catch (err) { out.replaceChildren(); errorBox(err, '读卡失败'); }
    };
    main.append(el('div', { class: 'toolbar' }, field('读卡器', reader), el('button', { type: 'button', id: 'card-read', text: '读卡', onclick: read })), out);
  }

  // ---- group pages ---------------------------------------------------------------------------

  async function groupHeader(box) {
    try {
      const g = await call('group.info', {});
      box.replaceChildren(fields([['集团名称', g.group_name], ['集团操作员', g.operator_name || g.operator], ['终端编号', g.terminal_no], ['集团可用额度', yuan(g.available_quota)]], 'group-info'));
      return g;
    } catch (err) { errorBox(err, '无法读取集团信息'); return null; }
  }

  // The most this card can take now: a multiple of the step within the card's balance ceiling
  // and the group's quota (null when the card, the quota or the rules are not known yet).
  function groupMaxFen(card, info) {
    if (!groupRules || !card || card.kind !== 'city' || card.balance_fen === null || card.balance_fen === undefined) return null;
    let max = groupRules.card_balance_max_fen - card.balance_fen;
    if (info) max = Math.min(max, info.available_quota_fen);
    return Math.max(0, max - (max % groupRules.step_fen));
  }

  function pageGroupRecharge(main) {
    const head = el('div', { id: 'group-head' });
    const reader = readerSelect('gr-reader', (r) => r.id.includes('city') || /城市|city/i.test(r.name));
    const cardBox = el('div', { id: 'gr-card' });
    const amount = el('input', { id: 'gr-amount', inputmode: 'numeric', placeholder: groupRules ? groupRules.step_yuan + ' 的整数倍' : '' });
    const quick = el('div', { class: 'quick', id: 'gr-quick' });
    const limit = el('p', { class: 'hint', id: 'gr-limit' });
    const submit = el('button', { type: 'submit', id: 'gr-submit', text: '确认充值' });
    const out = el('div', { id: 'gr-result' });
    const form = el('form', { class: 'form', id: 'gr-form' });
    main.append(head, el('h2', { text: '待充值卡片' }), el('div', { class: 'toolbar' }, field('读卡器', reader), el('button', { type: 'button', class: 'secondary', id: 'gr-read', text: '读卡', onclick: () => readCard() })), cardBox, form, out);
    let info = null;
    let card = null;
    // What this card may take, said before the operator types an amount.
    const showLimit = () => {
      const max = groupMaxFen(card, info);
      if (max === null) { limit.textContent = '请在读卡器上放置要充值的城市一卡通卡片。'; return; }
      const r = groupRules;
      const ceiling = '充值后卡内金额不能超' + r.card_balance_max_yuan + '元';
      limit.textContent = max >= r.min_fen
        ? '本卡本次最多可充 ' + (max / 100) + ' 元（卡内余额 ' + card.balance + ' 元，' + ceiling + (info ? '；集团可用额度 ' + info.available_quota + ' 元' : '') + '）。'
        : '本卡暂不能充值：卡内余额 ' + card.balance + ' 元，' + ceiling + (info && info.available_quota_fen < r.min_fen ? '，或集团可用额度不足' + r.min_yuan + '元' : '') + '。';
    };
    const readCard = async () => {
      try {
        card = await call('card.summary', { reader_id: reader.value });
        if (card.kind !== 'city') {
          cardBox.replaceChildren(el('p', { class: 'error', id: 'gr-wrong-card', text: '本页面为城市一卡通充值：读卡器上的卡片（' + (card.kind_label || '未知卡片') + '，卡号 ' + card.card_number + '）不是城市一卡通，请放置要充值的城市一卡通卡片。' }));
        } else {
          cardBox.replaceChildren(fields([['卡号', card.card_number], ['卡片类型', card.kind_label], ['卡内余额', yuan(card.balance)]], 'gr-card-fields'));
        }
      } catch (err) {
        card = null;
        // No card is not an error on this page: the same hint as when a card is taken away.
        cardBox.replaceChildren(err.name === 'NoCard' ? noCard()
          : el('p', { class: 'error', text: describe(err).message + ' ' + describe(err).action }));
      }
      showLimit();
    };
    const noCard = () => el('p', { class: 'hint', id: 'gr-no-card', text: '读卡器上没有卡片：请放置要充值的城市一卡通卡片。' });
    reader.addEventListener('change', () => { card = null; cardBox.replaceChildren(); readCard(); });
    // A card placed on or taken from this reader is read again while the form is open (the
    // listener ends with the page).
    const onReader = (e) => {
      if (!cardBox.isConnected) { document.removeEventListener('cardd-reader-event', onReader); return; }
      const ev = e.detail || {};
      if (ev.reader_id !== reader.value || form.hidden) return;
      if (ev.type === 'card_inserted' || ev.type === 'load_resolved') readCard();
      if (ev.type === 'card_removed') { card = null; cardBox.replaceChildren(noCard()); showLimit(); }
    };
    document.addEventListener('cardd-reader-event', onReader);
    groupHeader(head).then((g) => {
      info = g;
      for (const p of (groupRules && groupRules.presets) || []) {
        const whole = String(Number(p.amount));
        quick.appendChild(el('button', { type: 'button', class: 'secondary', 'data-amount': whole, text: p.label, onclick: () => { amount.value = whole; } }));
      }
      showLimit();
    });
    readCard();
    // The rules come first: the operator reads them before typing an amount.
    form.append(el('div', { class: 'rules', id: 'gr-rules' }, el('h3', { text: '充值规则' }), el('ul', {}, groupRuleLines().map((r) => el('li', { text: r })))),
      limit, field('充值金额（元）', amount), quick, submit);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const text = amount.value.trim();
      const problem = groupAmountProblem(text, card, info);
      if (problem) { alertBox(problem, '请修改充值金额', el('ul', {}, groupRuleLines().map((r) => el('li', { text: r })))); return; }
      const slot = 'group.recharge:' + (card ? card.card_number : '') + ':' + text;
      progressBox('正在读取卡片……');
      let run;
      try {
        run = await Cardd.startFlow(slot, 'group.recharge', { amount: text + '.00', card_number: card ? card.card_number : undefined }, reader.value);
        run = await Cardd.followRun(run.run_id, { progress: (m) => progressBox(m), prompt: async (p) => { const a = await promptAnswer(p); progressBox('正在充值……'); return a; } });
      } catch (err) { await errorBox(err, '充值未完成'); return; }
      Cardd.forgetFlow(slot);
      closeDialog(null);
      if (run.state !== 'succeeded' || (run.result && run.result.status !== 'ok')) {
        if (run.state === 'succeeded') alertBox(run.result.message, run.result.status === 'unknown' ? '充值结果待确认' : '充值');
        else showRunOutcome(run, '充值');
        return;
      }
      const r = run.result;
      out.replaceChildren(el('section', { class: 'panel success', id: 'gr-success' }, el('h2', { text: r.message || '充值成功！' }),
        fields([['订单编号', r.order_id], ['卡号', r.card_number], ['充值前余额', yuan(r.balance_before)], ['充值金额', yuan(r.amount)],
          ['现余额', yuan(r.balance_after)], ['充值前集团额度', yuan(r.quota_before)], ['充值后集团额度', yuan(r.quota_after)]], 'gr-success-fields'),
        el('p', { class: 'hint', text: REFUND_NOTE }),
        el('div', { class: 'buttons' }, el('button', { type: 'button', id: 'gr-again', text: '继续充值', onclick: () => route() }))));
      form.hidden = true;
      groupHeader(head);
      refreshCard(reader.value);
      const again = $('gr-again');
      if (again) again.focus();
    });
  }

  // Why an amount breaks the seed's rules (checked again by cardd), or null.
  function groupAmountProblem(text, card, info) {
    if (!/^\d+$/.test(text)) return '充值金额应为整数元，例如 50。';
    const fen = Number(text) * 100;
    if (card && card.kind !== 'city') return '本页面为城市一卡通充值：读卡器上的卡片不是城市一卡通，请放置要充值的城市一卡通卡片。';
    const r = groupRules;
    if (!r) return '无法读取充值规则，请刷新页面后重试。';
    if (fen < r.min_fen) return '充值金额不能小于' + r.min_yuan + '元。';
    if (fen % r.step_fen !== 0) return '充值金额必须是' + r.step_yuan + '元的整数倍，' + text + ' 元不是。';
    const max = groupMaxFen(card, info);
    if (fen > r.card_balance_max_fen || (card && card.balance_fen + fen > r.card_balance_max_fen)) {
      return '充值金额过大：充值后卡内金额不能超' + r.card_balance_max_yuan + '元' + (card ? '。卡内余额 ' + card.balance + ' 元，本卡本次最多可充 ' + (max / 100) + ' 元。' : '。');
    }
    if (info && fen > info.available_quota_fen) return '集团可用额度不足：可用额度 ' + info.available_quota + ' 元' + (max !== null ? '，本卡本次最多可充 ' + (max / 100) + ' 元。' : '。');
    return null;
  }

  // 充值查询 (orders) and 额度充值查询 (topups): a period by dates or preset, statistics, export.
  function pageGroupQuery(main, kind) {
    const method = kind === 'orders' ? 'group.orders' : 'group.topups';
    const start = el('input', { id: 'gq-start', type: 'date' });
    const end = el('input', { id: 'gq-end', type: 'date' });
    const out = el('div', { id: 'gq-result' });
    let preset = 'last_7_days';
    // Typed dates win over a preset: a start alone is from that day until today, an end alone
    // up to that day (cardd takes the longest period it allows), both a range; none 最近7天.
    const period = () => {
      if (start.value || end.value) {
        const p = {};
        if (start.value) p.start_date = start.value;
        if (end.value) p.end_date = end.value;
        return p;
      }
      return { preset: preset || 'last_7_days' };
    };
    // Why the typed dates cannot be queried, or null.
    const periodProblem = () => (start.value && end.value && start.value > end.value
      ? '开始日期 ' + start.value + ' 晚于结束日期 ' + end.value + '，请重新选择。' : null);
    const presets = el('div', { class: 'presets' }, vocab.query_periods.map(({ code, label }) => el('button', {
      type: 'button', class: 'secondary', 'data-preset': code, text: label,
      onclick: (e) => { preset = code; start.value = ''; end.value = ''; markPreset(e.target); query(); },
    })));
    const markPreset = (b) => { for (const x of presets.children) x.classList.toggle('active', x === b); };
    for (const i of [start, end]) i.addEventListener('change', () => { preset = null; markPreset(null); });
    const query = async () => {
      const problem = periodProblem();
      if (problem) { out.replaceChildren(); alertBox(problem, '请修改查询日期'); return; }
      try {
        const r = await call(method, period());
        out.replaceChildren(kind === 'orders' ? ordersView(r) : topupsView(r));
      } catch (err) { out.replaceChildren(); errorBox(err, '查询失败'); }
    };
    const exporter = (format) => async () => {
      const problem = periodProblem();
      if (problem) { alertBox(problem, '请修改查询日期'); return; }
      try {
        const r = await call(method + '.export', { ...period(), format });
        Cardd.download(r.filename, r.content_type, r.data_base64);
        $('gq-exported').textContent = '已导出 ' + r.rows + ' 条记录：' + r.filename;
      } catch (err) { errorBox(err, '导出失败'); }
    };
    main.append(el('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); query(); } },
      field('开始日期', start), field('结束日期', end), el('button', { type: 'submit', id: 'gq-query', text: '查询' }), presets),
    el('p', { class: 'hint', id: 'gq-period-rule', text: '只填开始日期：查询该日至今天；只填结束日期：查询截至该日（最长366天）；都不填：最近7天。开始日期不能晚于结束日期。' }),
    el('div', { class: 'toolbar' },
      el('button', { type: 'button', id: 'gq-export-csv', class: 'secondary', text: '导出 CSV', onclick: exporter('csv') }),
      el('button', { type: 'button', id: 'gq-export-xlsx', class: 'secondary', text: '导出 Excel', onclick: exporter('xlsx') }),
      el('span', { id: 'gq-exported', class: 'hint' })), out);
    markPreset(presets.children[0]);
    query();
  }

  function periodLine(r) {
    return el('p', { class: 'hint', text: (r.group_name || '') + '　查询期间：' + r.period.start_date + ' 至 ' + r.period.end_date });
  }

  function ordersView(r) {
    const s = r.stats || {};
    return el('div', {}, periodLine(r),
      fields([['充值成功笔数', s.success_count], ['充值成功金额', yuan(s.success_amount)], ['充值失败笔数', s.failure_count], ['充值失败金额', yuan(s.failure_amount)],
        ['已退款笔数', s.refunded_count], ['已退款金额', yuan(s.refunded_amount)], ['充值中笔数', s.in_progress_count], ['结果待确认笔数', s.pending_count], ['结果待确认金额', yuan(s.pending_amount)]], 'gq-stats'),
      (r.rows || []).length === 0 ? el('p', { class: 'empty', text: '该期间没有充值记录。' }) : table([
        ['订单编号', (x) => x.order_id], ['卡号', (x) => x.card_number], ['充值前余额', (x) => yuan(x.balance_before)], ['充值金额', (x) => yuan(x.amount)],
        ['现余额', (x) => yuan(x.balance_after)], ['充值前集团额度', (x) => yuan(x.quota_before)], ['充值后集团额度', (x) => yuan(x.quota_after)],
        ['状态', (x) => x.status_label], ['操作员', (x) => x.operator_name || x.operator], ['充值时间', (x) => when(x.created_at)], ['备注', (x) => x.remark],
      ], r.rows, 'gq-table'));
  }

  function topupsView(r) {
    const s = r.stats || {};
    return el('div', {}, periodLine(r),
      fields([['转账成功笔数', s.transfer_success_count], ['转账成功金额', yuan(s.transfer_success_amount)], ['审核笔数', s.audited_count], ['审核金额', yuan(s.audited_amount)]], 'gq-stats'),
      (r.rows || []).length === 0 ? el('p', { class: 'empty', text: '该期间没有额度充值记录。' }) : table([
        ['订单编号', (x) => x.topup_id], ['转账金额', (x) => yuan(x.amount)], ['银行返回流水号', (x) => x.bank_serial], ['备注', (x) => x.remark],
        ['状态', (x) => x.status_label], ['操作员', (x) => x.operator_name || x.operator], ['审核员', (x) => x.auditor_name || x.auditor], ['转账时间', (x) => when(x.created_at)],
      ], r.rows, 'gq-table'));
  }

  // Where 额度充值 hands the transfer to the bank's pages (/bank) and where the bank hands the
  // result back (sessionStorage: the same tab, nothing in the address).
  const BANK_TRANSFER_KEY = 'cardd.bank.transfer';
  const BANK_RESULT_KEY = 'cardd.bank.result';

  function pageGroupTopUp(main) {
    const head = el('div', { id: 'group-head' });
    const amount = el('input', { id: 'gt-amount', inputmode: 'numeric', placeholder: '整数元' });
    const remark = el('input', { id: 'gt-remark', maxlength: '100' });
    const out = el('div', { id: 'gt-result' });
    let info = null;
    const headed = groupHeader(head).then((g) => { info = g; return g; });
    const form = el('form', { class: 'form', id: 'gt-form' },
      el('p', { class: 'hint', text: '转账金额不能小于0或带小数点。确认转账后将跳到网上支付页面（本机为模拟网上银行，不会发生真实扣款），支付成功后一卡通后台审核，审核通过后集团额度增加。' }),
      field('转账金额（元）', amount), field('备注', remark),
      el('button', { type: 'submit', id: 'gt-submit', text: '确认转账' }));
    main.append(head, form, out);
    // 转账成功 (or what the bank answered): the seed's fields, then the audit to come.
    const show = (r) => {
      const paid = r.status === 'paid' || r.status === 'approved';
      out.replaceChildren(el('section', { class: 'panel ' + (paid ? 'success' : ''), id: 'gt-success' },
        el('h2', { text: paid && r.status === 'paid' ? '转账成功' : (r.message || r.status_label) }),
        fields([['订单编号', r.topup_id], ['充值转账金额', yuan(r.amount)], ['银行返回流水号', r.bank_serial], ['集团名称', r.group_name], ['操作员', r.operator === state.me.username ? (state.me.display_name || r.operator) : r.operator], ['状态', r.status_label]], 'gt-fields'),
        el('p', { class: 'hint', text: '特别说明：转账成功后，一卡通操作员会进行后续审核工作。' }),
        el('div', { class: 'buttons' },
          r.status === 'unknown' || r.status === 'pending' ? el('button', { type: 'button', class: 'secondary', text: '查询银行结果', onclick: async () => {
            try { show(await call('group.topup_status', { topup_id: r.topup_id })); } catch (err) { errorBox(err, '查询失败'); }
          } }) : null,
          el('button', { type: 'button', id: 'gt-again', class: 'secondary', text: '继续转账', onclick: () => route() }))));
    };
    // Back from the bank: the transfer's result.
    const back = sessionStorage.getItem(BANK_RESULT_KEY);
    if (back) {
      sessionStorage.removeItem(BANK_RESULT_KEY);
      form.hidden = true;
      headed.then(() => call('group.topup_status', { topup_id: back })).then(show, (err) => { form.hidden = false; errorBox(err, '查询失败'); });
    }
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const text = amount.value.trim();
      if (!/^[1-9]\d*$/.test(text)) { alertBox('转账金额应为大于0的整数元，不能带小数点。', '请修改转账金额'); return; }
      const sure = await confirmBox('转账金额：' + text + '元。备注：' + (remark.value.trim() || '无') + '。确认转账？');
      if (!sure) return;
      // The bank's pages take it from here; nothing is paid until 确认支付 there.
      sessionStorage.setItem(BANK_TRANSFER_KEY, JSON.stringify({
        amount: text, remark: remark.value.trim(), group_name: info ? info.group_name : '',
        operator: info ? (info.operator_name || info.operator) : (state.me.display_name || state.me.username),
      }));
      location.href = '/bank';
    });
  }

  // ---- auditor pages -------------------------------------------------------------------------

  function pageAuditTopUps(main) {
    const out = el('div', { id: 'at-result' });
    main.append(el('p', { class: 'hint', text: '银行已付款的额度充值，审核通过后集团额度增加；每笔只能审核一次。' }), out);
    const load = async () => {
      let p;
      try { p = await call('group.audit.pending', {}); } catch (err) { errorBox(err, '查询失败'); return; }
      const rows = p.topups || [];
      const decide = (t, approve) => async () => {
        const reason = await askText((approve ? '通过' : '驳回') + '额度充值 ' + t.topup_id + '（' + t.amount + ' 元）', '审核意见');
        if (!reason) return;
        try { await call('group.audit.topup', { topup_id: t.topup_id, approve, reason }); await alertBox(approve ? '审核通过，集团额度已增加。' : '已驳回。', '额度充值审核'); } catch (err) { await errorBox(err, '审核未完成'); }
        load();
      };
      out.replaceChildren(rows.length === 0 ? el('p', { class: 'empty', text: '没有待审核的额度充值。' }) : table([
        ['集团编号', (t) => t.group_id], ['订单编号', (t) => t.topup_id], ['转账金额', (t) => yuan(t.amount)], ['银行返回流水号', (t) => t.bank_serial],
        ['备注', (t) => t.remark], ['操作员', (t) => t.operator_name || t.operator], ['转账时间', (t) => when(t.created_at)],
        ['操作', (t) => el('span', { class: 'row-actions' }, el('button', { type: 'button', text: '通过', 'data-decision': 'approve', onclick: decide(t, true) }), el('button', { type: 'button', class: 'warn', text: '驳回', 'data-decision': 'reject', onclick: decide(t, false) }))],
      ], rows, 'at-table'));
    };
    load();
  }

  function pageAuditRefunds(main) {
    const out = el('div', { id: 'ar-result' });
    main.append(el('p', { class: 'hint', text: '充值失败的订单：按卡片证据决定退回额度（卡内未到账）或改为充值成功（卡内已到账）；结果未确定时请出示卡片。' }), out);
    const load = async () => {
      let p;
      try { p = await call('group.audit.pending', {}); } catch (err) { errorBox(err, '查询失败'); return; }
      const rows = p.orders || [];
      const decide = (ev, method, label) => async () => {
        const reason = await askText(label + '：订单 ' + ev.order.order_id + '（' + ev.order.amount + ' 元）。' + ev.message, '审核意见');
        if (!reason) return;
        try { await call(method, { order_id: ev.order.order_id, reason }); await alertBox(label + '已完成。', '退款审核'); } catch (err) { await errorBox(err, label + '未完成'); }
        load();
      };
      out.replaceChildren(rows.length === 0 ? el('p', { class: 'empty', text: '没有待审核的失败订单。' }) : table([
        ['订单编号', (e) => e.order.order_id], ['卡号', (e) => e.order.card_number], ['充值金额', (e) => yuan(e.order.amount)], ['操作员', (e) => e.order.operator_name || e.order.operator],
        ['充值时间', (e) => when(e.order.created_at)], ['卡片证据', (e) => e.message],
        ['操作', (e) => el('span', { class: 'row-actions' },
          e.verdict === 'not_landed' ? el('button', { type: 'button', text: '退款', onclick: decide(e, 'group.audit.refund', '退回额度') }) : null,
          e.verdict === 'landed' ? el('button', { type: 'button', text: '改为充值成功', onclick: decide(e, 'group.audit.resolve', '改为充值成功') }) : null)],
      ], rows, 'ar-table'));
    };
    load();
  }

  function pageJournalOpen(main) {
    const out = el('div', { id: 'jo-result' });
    const lost = el('div', { id: 'jo-lost' });
    main.append(
      el('p', { class: 'hint', text: '卡片无法证明结果的圈存：请核对卡内余额和交易记录（或客户凭证）后判定是否已到账，并填写原因；结果为“待确认”的交易请将卡片放到读卡器上，由系统读卡确认。' }),
      el('p', { class: 'hint', text: '卡片遗失、损坏或锁定无法读卡时：等待期满后由主管申请挂失核定，再由另一位审核人员确认；该卡以后再出现时，系统先按核定结论核对卡片。' }),
      out, el('h3', { text: '挂失核定' }), lost);
    const done = async (label, call_) => {
      try { await call_(); await alertBox(label + '已记录。', '待核对圈存'); } catch (err) { await errorBox(err, label + '未完成'); }
      load();
    };
    const decide = (t, landed) => async () => {
      const label = landed ? '判定已到账' : '判定未到账';
      const reason = await askText(label + '：交易 ' + t.txn_id + '，卡号 ' + t.card_number + '，金额 ' + yuan(t.amount) + '。请写明核对依据。', '核对原因');
      if (!reason) return;
      done(label, () => call('journal.resolve', { txn_id: t.txn_id, landed, reason }));
    };
    const propose = (t, landed) => async () => {
      const label = '挂失核定申请（' + (landed ? '已到账' : '未到账') + '）';
      const reason = await askText(label + '：交易 ' + t.txn_id + '，卡号 ' + t.card_number + '，金额 ' + yuan(t.amount) + '。请写明卡片遗失、损坏或锁定的情况和核对依据。', '原因');
      if (!reason) return;
      done(label, () => call('journal.propose_lost_card', { txn_id: t.txn_id, landed, reason }));
    };
    const confirmLost = (t) => async () => {
      const p = t.lost_card_proposal;
      const label = '确认挂失核定（' + (p.landed ? '已到账' : '未到账') + '）';
      const ok = await confirmBox(label + '：交易 ' + t.txn_id + '，卡号 ' + t.card_number + '，金额 ' + yuan(t.amount) + '。申请人 ' + (p.proposed_by_name || p.proposed_by) + '，原因：' + p.reason, '确认挂失核定');
      if (!ok) return;
      done(label, () => call('journal.confirm_lost_card', { txn_id: t.txn_id, landed: p.landed }));
    };
    const clearWatch = (v) => async () => {
      const reason = await askText('卡号 ' + v.card_number + ' 的卡片与挂失核定结论不符（交易 ' + v.txn_id + '）。请写明处理情况。', '处理情况');
      if (!reason) return;
      done('处理结果', () => call('journal.clear_watch', { txn_id: v.txn_id, reason }));
    };
    const actions = (t) => {
      const buttons = [];
      const lostAllowed = t.lost_card_allowed_from && new Date(t.lost_card_allowed_from) <= new Date();
      if (t.state === 'needs_reconciliation') {
        buttons.push(el('button', { type: 'button', text: '已到账', onclick: decide(t, true) }),
          el('button', { type: 'button', class: 'secondary', text: '未到账', onclick: decide(t, false) }));
      }
      if (role() === 'supervisor' && lostAllowed && !t.lost_card_proposal) {
        buttons.push(el('button', { type: 'button', class: 'secondary', text: '挂失核定：已到账', onclick: propose(t, true) }),
          el('button', { type: 'button', class: 'secondary', text: '挂失核定：未到账', onclick: propose(t, false) }));
      }
      if (role() === 'auditor' && t.lost_card_proposal) {
        buttons.push(el('button', { type: 'button', text: '确认挂失核定', onclick: confirmLost(t) }));
      }
      return buttons.length ? el('span', { class: 'row-actions' }, buttons) : null;
    };
    const status = (t) => {
      const base = t.state === 'needs_reconciliation' ? '待核对：' + (t.reason || '') : '待确认：请出示卡片';
      if (t.lost_card_proposal) return base + '；挂失核定申请中（' + (t.lost_card_proposal.landed ? '已到账' : '未到账') + '，申请人 ' + (t.lost_card_proposal.proposed_by_name || t.lost_card_proposal.proposed_by) + '）';
      return base + '；' + when(t.lost_card_allowed_from) + ' 后可办理挂失核定';
    };
    const load = async () => {
      let rows; let verdicts;
      try { rows = await call('journal.open', {}); verdicts = await call('journal.lost_cards', {}); } catch (err) { errorBox(err, '查询失败'); return; }
      out.replaceChildren(rows.length === 0 ? el('p', { class: 'empty', text: '没有待核对的圈存。' }) : table([
        ['交易编号', (t) => t.txn_id], ['卡号', (t) => t.card_number], ['金额', (t) => yuan(t.amount)], ['圈存前余额', (t) => yuan(t.balance_before)],
        ['记录时间', (t) => when(t.created_at)], ['状态', status], ['操作', actions],
      ], rows, 'jo-table'));
      const settled = verdicts.filter((v) => v.status !== 'proposed');
      lost.replaceChildren(settled.length === 0 ? el('p', { class: 'empty', text: '没有挂失核定记录。' }) : table([
        ['交易编号', (v) => v.txn_id], ['卡号', (v) => v.card_number], ['结论', (v) => (v.landed ? '已到账' : '未到账')],
        ['申请人', (v) => v.proposed_by_name || v.proposed_by], ['确认人', (v) => v.confirmed_by_name || v.confirmed_by], ['原因', (v) => v.reason], ['状态', (v) => v.status_label],
        ['操作', (v) => (role() === 'auditor' && v.status === 'card_contradicted' ? el('button', { type: 'button', text: '已处理', onclick: clearWatch(v) }) : null)],
      ], settled, 'jo-lost-table'));
    };
    load();
  }

  // ---- administration, password --------------------------------------------------------------

  // The password rule, shown next to every new-password field before anything is sent.
  const passwordRule = () => '密码至少' + ((state.me && state.me.password_chars_min) || 6) + '个字符。';

  function pageOperators(main) {
    const out = el('div', { id: 'op-result' });
    const username = el('input', { id: 'op-user', maxlength: '64', required: true });
    const name = el('input', { id: 'op-name', maxlength: '64' });
    const password = el('input', { id: 'op-password', type: 'password', required: true, placeholder: passwordRule() });
    const roleSel = el('select', { id: 'op-role' }, vocab.roles.map((r) => el('option', { value: r.code, text: r.label })));
    const group = el('input', { id: 'op-group', maxlength: '32', placeholder: '集团操作员必填' });
    const load = async () => {
      let ops;
      try { ops = await call('operators.list', {}); } catch (err) { errorBox(err, '查询失败'); return; }
      out.replaceChildren(table([
        ['用户名', (o) => o.username], ['姓名', (o) => o.display_name], ['角色', (o) => roleLabel(o.role)], ['集团', (o) => o.group_id],
        ['状态', (o) => (o.disabled ? '已停用' : '正常')],
        ['操作', (o) => el('span', { class: 'row-actions' },
          el('button', { type: 'button', class: 'secondary', text: o.disabled ? '启用' : '停用', onclick: async () => {
            try { await call('operators.set_disabled', { username: o.username, disabled: !o.disabled }); } catch (err) { await errorBox(err); }
            load();
          } }),
          el('button', { type: 'button', class: 'secondary', text: '重置密码', onclick: async () => {
            const pw = await askText('为 ' + (o.display_name || o.username) + '（用户名 ' + o.username + '）设置新密码（其登录将结束）。' + passwordRule(), '新密码');
            if (!pw) return;
            try { await call('operators.reset_password', { username: o.username, new_password: pw }); await alertBox('密码已重置。'); } catch (err) { await errorBox(err); }
          } }))],
      ], ops, 'op-table'));
    };
    main.append(el('form', { class: 'toolbar', onsubmit: async (e) => {
      e.preventDefault();
      const params = { username: username.value.trim(), password: password.value, role: roleSel.value, display_name: name.value.trim() || username.value.trim() };
      if (group.value.trim()) params.group_id = group.value.trim();
      try { await call('operators.create', params); await alertBox('操作员已创建。'); } catch (err) { await errorBox(err, '创建失败'); }
      load();
    } }, field('用户名', username), field('姓名', name), field('初始密码', password), field('角色', roleSel), field('集团编号', group),
    el('button', { type: 'submit', text: '新建操作员' })), out);
    load();
  }

  // 模拟读卡器: the embedded default's simulated readers (demo only; see sim.js).
  function pageSim(main) {
    main.appendChild(el('p', { class: 'hint', text: '自助终端演示：在浏览器中打开 /kiosk/demo，用自助终端账号登录后，点击右上角的“模拟读卡器”也可在自助终端页面上操作。' }));
    main.appendChild(CarddSim.panel());
  }

  function pagePassword(main) {
    const oldPw = el('input', { id: 'pw-old', type: 'password', autocomplete: 'current-password', required: true });
    const newPw = el('input', { id: 'pw-new', type: 'password', autocomplete: 'new-password', required: true });
    const confirmPw = el('input', { id: 'pw-confirm', type: 'password', autocomplete: 'new-password', required: true });
    // The rule before anything is typed (the seed: any letters and digits; cardd also asks for
    // a least length and a change).
    const min = (state.me && state.me.password_chars_min) || 6;
    const max = (state.me && state.me.password_chars_max) || 256;
    const rule = el('p', { class: 'hint', id: 'pw-rule', text: '新密码可以输入任何字母和数字，至少 ' + min + ' 个字符、最多 ' + max + ' 个字符，不能与原密码相同；确认密码须与新密码一致。修改后其他已登录的页面需重新登录。' });
    main.append(el('form', { class: 'form', id: 'pw-form', onsubmit: async (e) => {
      e.preventDefault();
      try {
        await call('auth.change_password', { old_password: oldPw.value, new_password: newPw.value, confirm_password: confirmPw.value });
        oldPw.value = ''; newPw.value = ''; confirmPw.value = '';
        await alertBox('密码已修改', '修改密码');
      } catch (err) { await errorBox(err, '密码未修改'); }
    } }, rule, field('原密码', oldPw), field('新密码', newPw), field('确认密码', confirmPw), el('button', { type: 'submit', id: 'pw-submit', text: '修改密码' })));
  }

  boot();
})();
