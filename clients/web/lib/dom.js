// @ts-check
// DOM helpers shared by every page: elements built from data (never from HTML strings),
// elements by id, and file downloads.

/**
 * The element with id `id`, which the page has (its HTML or what a page built): the pages
 * look up their own fixed elements. Inputs come back as such with a type argument:
 * `$('login-user', HTMLInputElement)`.
 * @template {HTMLElement} [E=HTMLElement]
 * @param {string} id
 * @param {new () => E} [kind]
 * @returns {E}
 */
export function $(id, kind) {
  const node = document.getElementById(id);
  if (kind && node && !(node instanceof kind)) throw new TypeError(id + ' is not ' + kind.name);
  return /** @type {E} */ (node);
}

// Saves `base64` as a file named `filename` (an export download).
/**
 * The page's elements that match `selector`.
 * @param {string} selector
 * @returns {HTMLElement[]}
 */
export const allOf = (selector) =>
  /** @type {HTMLElement[]} */ ([...document.querySelectorAll(selector)]);

/**
 * @param {string} filename
 * @param {string} contentType
 * @param {string} base64
 */
export function download(filename, contentType, base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: contentType }));
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// A DOM element: el('div', {class: 'x', text: '…'}, child, …). No HTML strings anywhere, so
// nothing from the API is ever parsed as markup.
/**
 * @typedef {Node | string | number | null | undefined | false} Leaf
 * @typedef {Leaf | Leaf[]} Child
 * What an element holds: nodes, text, and nothing for null/undefined/false.
 */

/**
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, any> | null} [attrs] `text`, `class`, `value`, `on<event>` handlers,
 *   other attributes (true for a bare one; null, undefined and false leave it out)
 * @param {Child[]} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'value') /** @type {any} */ (node).value = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  for (const c of /** @type {Child[]} */ (children.flat())) {
    if (c === null || c === undefined || c === false) continue;
    node.appendChild(
      typeof c === 'string' || typeof c === 'number'
        ? document.createTextNode(String(c))
        : /** @type {Node} */ (c),
    );
  }
  return node;
}
