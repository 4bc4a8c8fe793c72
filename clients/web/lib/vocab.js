// @ts-check
// The words cardd uses (roles, plate colours, statuses, query periods) and the group recharge
// rules, fetched from the daemon (system.vocabulary, group.rules): never copied into a page.

import { call } from './rpc.js';

/** @typedef {import('../types/rpc').Vocabulary} Vocabulary */
/** @typedef {import('../types/rpc').Result<'group.rules'>} GroupRules */

/** The vocabulary, empty until {@link loadVocabulary} has read it. */
/** @type {Vocabulary} */
export const vocab = {
  roles: [],
  plate_colours: [],
  order_statuses: [],
  topup_statuses: [],
  query_periods: [],
};

/** The group recharge rules (a group operator's session only). */
/** @type {{ group: GroupRules | null }} */
export const rules = { group: null };

/** Reads the vocabulary; it stays empty when cardd does not answer. */
export async function loadVocabulary() {
  const words = await call('system.vocabulary', {}).catch(() => null);
  if (words) Object.assign(vocab, words);
}

/**
 * Reads the group recharge rules when `wanted` (and forgets them otherwise).
 * @param {boolean} wanted
 */
export async function loadGroupRules(wanted) {
  rules.group = wanted ? await call('group.rules', {}).catch(() => null) : null;
}

/**
 * A role's zh-CN name (the code itself when the vocabulary does not know it).
 * @param {string} code
 */
export const roleLabel = (code) =>
  (vocab.roles.find((r) => r.code === code) || { label: code }).label;
