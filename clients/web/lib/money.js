// @ts-check
// Money as the API sends it: decimal yuan strings (never floats), shown with their unit.

/**
 * `12.50 元`, or `—` when there is no amount.
 * @param {string | number | null | undefined} v
 */
export const yuan = (v) => (v === null || v === undefined || v === '' ? '—' : v + ' 元');
