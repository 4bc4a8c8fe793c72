// @ts-check
// The back office's JSON-RPC client: POST /rpc with the session's token (kept in
// sessionStorage, sent as `Authorization: Bearer`), errors as BackOfficeError with the zh-CN
// message the host wrote.

/** @typedef {import('./api').Api} Api */

const TOKEN_KEY = 'cardd-backoffice-token';
/** Longest wait for one answer, in milliseconds. */
const CALL_TIMEOUT_MS = 60000;

/** A refused or failed call: `name` is the host's error name (`data.name`). */
export class BackOfficeError extends Error {
  /**
   * @param {string} name
   * @param {string} message
   * @param {number} code
   */
  constructor(name, message, code) {
    super(message);
    this.name = name;
    this.code = code;
  }
}

/** Called when the session has ended (the page shows the login). */
export const session = {
  /** @type {() => void} */
  ended: () => {},
};

/** @returns {string | null} */
export const token = () => sessionStorage.getItem(TOKEN_KEY);
/** @param {string | null} value */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

let nextId = 1;

/**
 * Calls `method` with `params`.
 * @template {keyof Api} M
 * @param {M} method
 * @param {Api[M]['params']} params
 * @returns {Promise<Api[M]['result']>}
 */
export async function call(method, params) {
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'application/json' };
  const t = token();
  if (t) headers['Authorization'] = 'Bearer ' + t;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CALL_TIMEOUT_MS);
  let response;
  try {
    response = await fetch('/rpc', {
      method: 'POST',
      headers,
      body: JSON.stringify({ jsonrpc: '2.0', id: nextId++, method, params }),
      signal: abort.signal,
      credentials: 'omit',
    });
  } catch (err) {
    throw new BackOfficeError('Unreachable', '无法连接后台：请检查后台服务是否在运行，然后重试', 0);
  } finally {
    clearTimeout(timer);
  }
  if (!response.ok) {
    throw new BackOfficeError('Refused', (await response.text()) || '后台拒绝了请求', response.status);
  }
  const reply = await response.json();
  if (reply.error) {
    const name = (reply.error.data && reply.error.data.name) || 'Error';
    if (name === 'NotLoggedIn' || name === 'SessionEnded') {
      setToken(null);
      session.ended();
    }
    throw new BackOfficeError(name, reply.error.message, reply.error.code);
  }
  return reply.result;
}
