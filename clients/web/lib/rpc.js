// @ts-check
// cardd's JSON-RPC client for the teller console and the kiosk screen: calls over HTTP POST /,
// events over the WebSocket at /, flows started with an idempotency key that is kept in
// sessionStorage before the request is sent (so a retry after a lost answer reuses it and never
// starts a second load), and error codes turned into words a teller understands.

/** @typedef {import('../types/rpc').Methods} Methods */
/** @typedef {import('../types/rpc').Result<'flows.get'>} Run */
/** @typedef {import('../types/rpc').Result<'flows.events'>} RunEvents */
/** @typedef {NonNullable<RunEvents['prompt']>} Prompt */
/** @typedef {RunEvents['events'][number]} RunEvent */
/** @typedef {import('../types/rpc').Result<'events.subscribe'>} CarddEvent */

const TOKEN_KEY = 'cardd.token';
const FLOW_KEY_PREFIX = 'cardd.flow.';
/** How long one flows.events call waits for news, in milliseconds. */
const FLOW_WAIT_MS = 10000;
/** Delay before the event WebSocket reconnects, in milliseconds. */
const RECONNECT_MS = 2000;
/** The states a run ends in. */
/** @type {readonly string[]} */
export const FINISHED = ['succeeded', 'failed', 'cancelled', 'interrupted'];

// What to do next, in zh-CN, by the error name cardd sends in `data.error`. The daemon's own
// `data.action` is English, for integrators: it is never shown to a person.
/** @type {Record<string, string>} */
export const ACTIONS = {
  Unauthenticated: '登录已超时，请重新登录。',
  Forbidden: '当前操作员无权办理此业务，请由有权限的操作员办理。',
  InvalidCredentials: '请核对用户名和密码后重新登录。',
  TooManyAttempts: '登录失败次数过多，请稍等片刻再试。',
  OriginNotAllowed: '请从 cardd 自己的地址（127.0.0.1）打开本页面。',
  RateLimited: '操作过于频繁，请稍候再试。',
  PasswordRejected: '请按提示重新输入密码。',
  ReaderNotFound: '未找到读卡器，请检查读卡器连接。',
  ReaderBusy: '读卡器正被其他业务占用，请等待其完成后再试。',
  NoCard: '请在读卡器上放置卡片后重试。',
  CardRemoved: '请将同一张卡片放回读卡器，系统会先核对卡片状态，不会重复圈存。',
  ReaderTimeout: '请检查卡片是否放好后重试。',
  ReaderGone: '请重新连接读卡器，连接后会自动识别。',
  ReaderDriverCrashed: '读卡器插件正在自动重启，请稍候几秒，读卡器恢复后重试；如反复出现，请联系管理员。',
  ReaderDriverMalformed: '请重试；如反复出现，请联系管理员将日志发给读卡器厂商。',
  CardError: '请按提示处理卡片问题。',
  UnsupportedCard: '请使用本业务所需类型的卡片。',
  FlowNotFound: '本机未提供该业务，请联系管理员。',
  RunNotFound: '请重新发起本次业务。',
  IdempotencyConflict: '请重新发起本次业务。',
  NoPendingPrompt: '请刷新业务状态后再操作。',
  OperatorNotFound: '请核对用户名。',
  OperatorExists: '该用户名已存在，请换一个用户名。',
  HostNotFound: '请核对车牌号、车牌颜色或记录编号后重新查询。',
  RecordStateConflict: '请按提示中的记录状态办理。',
  LoadLanded: '该笔充值已在卡内，请勿重复圈存；记录已更正为已圈存。',
  CardEvidenceRequired: '请将该记录的卡片放在读卡器上重试，或请主管核对后填写原因办理。',
  CardNotEligible: '请使用该车辆本人的有效卡片；超过余额上限时请减少金额。',
  LoadOutcomeUnknown: '请将同一张卡片放回读卡器，系统会读卡确认结果；请勿重复圈存。',
  CardIntentPending: '请将该卡重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值。',
  GroupAccessDenied: '请使用本集团的操作员登录。',
  RechargeRefused: '请按提示更换充值金额。',
  QuotaInsufficient: '请减少充值金额，或先进行额度充值并等待审核。',
  GroupRecordNotFound: '请核对编号后重新查询。',
  GroupStateConflict: '请重新查询该记录，按其当前状态办理。',
  PaymentDeclined: '请核对付款账户后重新转账。',
  PaymentUnknown: '请勿重复转账；稍后在额度充值查询中查看银行结果。',
  EvidenceConflict: '请先查看卡片证据；结果未确定时请出示卡片后再审核。',
  QueryTooLarge: '请缩短查询时间段。',
  IssuerHostUnreachable: '无法连接发卡方后台，请稍后再试；如持续出现，请联系管理员检查网络。',
  InvalidParams: '请按提示修改输入内容后重试。',
  Internal: '请重试一次；如仍失败，请联系技术支持并提供 cardd 日志。',
  FailedClosed: '请勿重试，请联系管理员检查 cardd 数据目录。',
  ServerBusy: '请稍后重试。',
  WebSocketRequired: '订阅只能通过 WebSocket 连接；请刷新页面后重试。',
  LeaseNotFound: '读卡器占用已失效，请重新办理。',
  Unsupported: '该读卡器不支持此业务，请换用提示中的读卡器。',
  ParseError: '页面发送的请求有误，请刷新页面后重试；如仍失败，请联系技术支持。',
  InvalidRequest: '页面发送的请求有误，请刷新页面后重试；如仍失败，请联系技术支持。',
  MethodNotFound: '本机 cardd 版本不支持此功能，请联系管理员升级。',
  BatchesNotSupported: '请刷新页面后重试。',
  TooManySubscriptions: '打开的页面过多，请关闭其他页面后重试。',
  RequestTooLarge: '输入内容过长，请减少后重试。',
  ResponseTooLarge: '查询结果过多，请缩短时间段或减少每页条数。',
  Network: '请确认 cardd 服务已启动、网络正常，然后重试。',
};

/** @typedef {{ error?: string, action?: string, [key: string]: unknown }} ErrorData */

/** An error cardd answered (or the network's): `name` is cardd's error name. */
export class ApiError extends Error {
  /**
   * @param {number} code the JSON-RPC error code (0 for the network, an HTTP status)
   * @param {string} message
   * @param {ErrorData} [data]
   */
  constructor(code, message, data) {
    super(message);
    this.code = code;
    this.data = data || {};
    this.name = this.data.error || 'Error';
  }
}

let token = sessionStorage.getItem(TOKEN_KEY);
/** @type {((err: ApiError) => void) | null} */
let unauthenticated = null;
/** @type {(() => void) | null} */
let activity = null;
let nextId = 1;

/**
 * Keeps (or, with null, forgets) the session token for this tab.
 * @param {string | null} value
 */
export function setToken(value) {
  token = value;
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/**
 * Calls `method` with its named `params`; resolves with its result, rejects with an
 * {@link ApiError}. Method names, params and results are the API's (types/rpc.d.ts).
 * @template {keyof Methods} M
 * @param {M} method
 * @param {Methods[M]['params']} params
 * @returns {Promise<Methods[M]['result']>}
 */
export async function call(method, params) {
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  const body = JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params: params || {} });
  let response;
  try {
    response = await fetch('/', { method: 'POST', headers, body, cache: 'no-store' });
  } catch (e) {
    throw new ApiError(0, '无法连接 cardd 服务', { error: 'Network' });
  }
  let reply;
  try {
    reply = await response.json();
  } catch (e) {
    throw new ApiError(response.status, 'cardd 的应答无法识别（HTTP ' + response.status + '）', {
      error: 'Internal',
    });
  }
  if (reply.error) {
    const data = reply.error.data || {};
    if (!data.error && reply.error.code === -32040) data.error = 'Unauthenticated';
    const err = new ApiError(reply.error.code, reply.error.message, data);
    if (err.name === 'Unauthenticated' && unauthenticated) unauthenticated(err);
    else if (token && activity) activity();
    throw err;
  }
  // Every answered call with a token keeps the session alive on the daemon.
  if (token && activity) activity();
  return reply.result;
}

/**
 * What went wrong and what to do next, in a teller's words.
 * @param {unknown} err
 * @returns {{ message: string, action: string }}
 */
export function describe(err) {
  if (!(err instanceof ApiError))
    return {
      message: String((err && /** @type {any} */ (err).message) || err),
      action: ACTIONS.Internal,
    };
  return {
    message: err.message,
    action: ACTIONS[err.name] || '请按提示处理；如仍无法办理，请联系管理员。',
  };
}

/** A random (version 4) UUID. */
export function uuid() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return (
    h.slice(0, 8) +
    '-' +
    h.slice(8, 12) +
    '-' +
    h.slice(12, 16) +
    '-' +
    h.slice(16, 20) +
    '-' +
    h.slice(20)
  );
}

// Starts `flow` for the operation named `slot`. The idempotency key is saved before the
// request goes out; the same operation (same flow, params and reader) retried reuses it, so
// cardd answers with the same run instead of starting a second one.
/**
 * @param {string} slot
 * @param {string} flow
 * @param {unknown} params
 * @param {string | null} [readerId]
 */
export async function startFlow(slot, flow, params, readerId) {
  const storeKey = FLOW_KEY_PREFIX + slot;
  const wanted = JSON.stringify({ flow, params, reader_id: readerId || null });
  let saved = null;
  try {
    saved = JSON.parse(sessionStorage.getItem(storeKey) || 'null');
  } catch (e) {
    saved = null;
  }
  if (!saved || saved.op !== wanted) {
    saved = { op: wanted, key: uuid() };
    sessionStorage.setItem(storeKey, JSON.stringify(saved));
  }
  /** @type {Methods['flows.start']['params']} */
  const start = { flow, params, idempotency_key: saved.key };
  if (readerId) start.reader_id = readerId;
  return call('flows.start', start);
}

// The operation is over (the run finished): the next one gets a new key.
/** @param {string} slot */
export function forgetFlow(slot) {
  sessionStorage.removeItem(FLOW_KEY_PREFIX + slot);
}

// Follows a run to its end with flows.events: `on.progress(message)` for progress,
// `await on.prompt(prompt)` for each question (its value is the answer). Returns flows.get.
/**
 * @param {string} runId
 * @param {{
 *   progress?: (message: string, event: RunEvent) => void,
 *   prompt: (prompt: Prompt) => Promise<any>,
 * }} on
 * @returns {Promise<Run>}
 */
export async function followRun(runId, on) {
  let since = 0;
  for (;;) {
    const polled = await call('flows.events', { run_id: runId, since, wait_ms: FLOW_WAIT_MS });
    since = polled.next_since;
    for (const ev of polled.events || []) {
      if (ev.kind === 'progress' && on.progress) on.progress(ev.message, ev);
    }
    if (polled.state === 'waiting' && polled.prompt) {
      const answer = await on.prompt(polled.prompt);
      await call('flows.answer', { run_id: runId, prompt_id: polled.prompt.prompt_id, answer });
      continue;
    }
    if (FINISHED.includes(polled.state)) return call('flows.get', { run_id: runId });
  }
}

// Reader and card events from events.subscribe, reconnecting after a drop. `onEvent(event)`
// for each event, `onState(true)` once the subscription is in place, `onState(false)` when the
// connection closes. Returns a stop function.
/**
 * @param {(event: CarddEvent) => void} onEvent
 * @param {(open: boolean) => void} [onState]
 * @returns {() => void}
 */
export function subscribeEvents(onEvent, onState) {
  /** @type {WebSocket | null} */
  let socket = null;
  let stopped = false;
  /** @type {ReturnType<typeof setTimeout> | undefined} */
  let timer;
  const connect = () => {
    if (stopped || !token) return;
    const url = 'ws://' + location.host + '/?token=' + encodeURIComponent(token);
    const ws = new WebSocket(url);
    socket = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'events.subscribe', params: {} }));
    };
    ws.onmessage = (m) => {
      let msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (msg.method === 'events.event' && msg.params) onEvent(msg.params.result);
      // Subscribed: from now on no event is missed (a caller may re-read what it shows).
      else if (msg.id === 1 && msg.result !== undefined && onState) onState(true);
    };
    ws.onclose = () => {
      if (onState) onState(false);
      if (!stopped) timer = setTimeout(connect, RECONNECT_MS);
    };
  };
  connect();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (socket) socket.close();
  };
}

/**
 * `handler(err)` when cardd says the session is over.
 * @param {(err: ApiError) => void} handler
 */
export function onUnauthenticated(handler) {
  unauthenticated = handler;
}

/**
 * `handler()` after every call the daemon answered for the session (its idle clock restarts).
 * @param {() => void} handler
 */
export function onActivity(handler) {
  activity = handler;
}

/** The session token, or null when logged out. */
export function getToken() {
  return token;
}
