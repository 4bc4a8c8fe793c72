// @ts-check
// The 模拟读卡器 panel of the embedded default (`cardd --demo`): the simulated readers with their
// cards, and buttons to insert, take out and swap the demo cards and to pull a card in the
// middle of its next load (圈存中拔卡). Used by the console's 模拟读卡器 page (administrators)
// and by the kiosk's demo page (`/kiosk/demo`). With any other configuration the daemon has no
// `sim.*` methods and `sim.available()` is false, so nothing is shown.

import { call, describe, subscribeEvents } from './rpc.js';
import { el } from './dom.js';

/// Whether the daemon offers the panel (its methods are listed by rpc.discover).
export async function available() {
  try {
    const doc = /** @type {{ methods?: { name: string }[] }} */ (await call('rpc.discover', {}));
    return (doc.methods || []).some((m) => m.name === 'sim.readers');
  } catch (e) {
    return false;
  }
}

/** @typedef {import('../types/rpc').SimView} SimView */
/** @typedef {SimView['readers'][number]} SimReader */
/** @typedef {SimView['outside'][number]} SimCard */
/** @typedef {'sim.insert' | 'sim.remove' | 'sim.swap' | 'sim.pull_during_next_load'} SimAction */

/**
 * A demo card as the panel names it, with its balance when known.
 * @param {{ label: string, balance?: string | null }} c
 */
export const cardText = (c) =>
  c.label + (c.balance !== null && c.balance !== undefined ? '，余额 ' + c.balance + ' 元' : '');

// The panel as an element with `refresh()`; `onDone` runs after each change that succeeded.
/**
 * @param {(method: SimAction) => void} [onDone]
 */
export function panel(onDone) {
  const box = /** @type {HTMLDivElement & { refresh: (quiet?: boolean) => Promise<void> }} */ (
    el('div', { class: 'sim-panel', id: 'sim-panel' })
  );
  const message = el('p', { class: 'sim-message', id: 'sim-message', role: 'status' });
  /** @type {SimView | null} */
  let view = null;
  /** @type {(() => void) | null} */
  let stopEvents = null;

  /**
   * @template {SimAction} M
   * @param {M} method
   * @param {import('../types/rpc').Params<M>} params
   * @param {string} done what to say when it worked
   */
  async function act(method, params, done) {
    message.textContent = '';
    try {
      view = await call(method, params);
      render();
      message.textContent = done;
      if (onDone) onDone(method);
    } catch (err) {
      const d = describe(err);
      message.textContent = d.message + ' ' + d.action;
    }
  }

  /**
   * @param {SimView} view
   * @param {SimReader} r
   */
  function readerRow(view, r) {
    // The cards this reader takes; one pulled mid-load first, to be put back.
    const outside = view.outside
      .filter((c) => r.accepts.includes(c.card))
      .sort((a, b) => Number(b.pulled_mid_load) - Number(a.pulled_mid_load));
    const choice = el(
      'select',
      { 'data-role': 'card-choice', 'aria-label': '选择卡片' },
      outside.map((c) =>
        el('option', {
          value: c.card,
          text: c.label + (c.pulled_mid_load ? '（圈存中被拔出）' : ''),
        }),
      ),
    );
    const chosen = () => choice.value;
    const buttons = [];
    if (r.card) {
      buttons.push(
        el('button', {
          type: 'button',
          'data-action': 'remove',
          text: '取出卡片',
          onclick: () => act('sim.remove', { reader_id: r.reader_id }, '已取出卡片'),
        }),
      );
      if (outside.length > 0) {
        buttons.push(
          el('button', {
            type: 'button',
            class: 'secondary',
            'data-action': 'swap',
            text: '更换卡片',
            onclick: () =>
              act('sim.swap', { reader_id: r.reader_id, card: chosen() }, '已更换卡片'),
          }),
        );
      }
      if (r.card.balance !== null && r.card.balance !== undefined) {
        buttons.push(
          el('button', {
            type: 'button',
            class: 'warn',
            'data-action': 'pull',
            text: '圈存中拔卡',
            disabled: r.pull_armed,
            onclick: () =>
              act(
                'sim.pull_during_next_load',
                { reader_id: r.reader_id },
                '已设置：下一次圈存写卡时拔出卡片',
              ),
          }),
          el('button', {
            type: 'button',
            class: 'warn',
            'data-action': 'pull-before',
            text: '写卡前拔卡',
            disabled: r.pull_armed,
            onclick: () =>
              act(
                'sim.pull_during_next_load',
                { reader_id: r.reader_id, before_write: true },
                '已设置：下一次圈存写卡前拔出卡片（写卡失败）',
              ),
          }),
        );
      }
    } else if (outside.length > 0) {
      buttons.push(
        el('button', {
          type: 'button',
          'data-action': 'insert',
          text: '插入卡片',
          onclick: () =>
            act('sim.insert', { reader_id: r.reader_id, card: chosen() }, '已插入卡片'),
        }),
      );
    }
    const status = r.card
      ? cardText(r.card) + (r.pull_armed ? '（下一次圈存写卡时拔出）' : '')
      : '无卡';
    return el(
      'div',
      { class: 'sim-reader', 'data-sim-reader': r.reader_id },
      el(
        'div',
        { class: 'sim-title' },
        el('b', { text: r.label }),
        ' ',
        el('span', { class: 'sim-id', text: r.reader_id }),
      ),
      el('div', { class: 'sim-card', text: status }),
      el('div', { class: 'sim-actions' }, outside.length > 0 ? choice : null, buttons),
    );
  }

  function render() {
    if (!view) return;
    const shown = view;
    const outside = view.outside.length
      ? el(
          'ul',
          { class: 'sim-outside', id: 'sim-outside' },
          view.outside.map((c) =>
            el('li', {
              'data-card': c.card,
              text: cardText(c) + (c.pulled_mid_load ? '（圈存中被拔出，请插回同一读卡器）' : ''),
            }),
          ),
        )
      : el('p', { class: 'sim-outside', id: 'sim-outside', text: '无' });
    box.replaceChildren(
      el('p', {
        class: 'sim-note',
        text: '演示模式：模拟在读卡器中插入、取出、更换卡片，或在圈存写卡时拔出卡片。',
      }),
      ...shown.readers.map((r) => readerRow(shown, r)),
      el('div', { class: 'sim-title' }, el('b', { text: '读卡器外的卡片' })),
      outside,
      message,
    );
  }

  async function refresh() {
    try {
      view = await call('sim.readers', {});
      render();
    } catch (err) {
      const d = describe(err);
      message.textContent = d.message + ' ' + d.action;
      box.replaceChildren(message);
    }
  }

  // Cards come and go on their own too (a card pulled mid-load): follow the reader events
  // while the panel is on the page.
  stopEvents = subscribeEvents((ev) => {
    if (!box.isConnected && view) {
      if (stopEvents) stopEvents();
      stopEvents = null;
      return;
    }
    if (ev.type === 'card_inserted' || ev.type === 'card_removed') refresh();
  });
  // `quiet`: forget the last action's message (the drawer opened again).
  box.refresh = (quiet) => {
    if (quiet) message.textContent = '';
    return refresh();
  };
  refresh();
  return box;
}
