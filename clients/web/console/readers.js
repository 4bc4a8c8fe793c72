// @ts-check
// The readers and their cards, live: read at login, kept current by the event subscription,
// shown in the header.

import { call } from '../lib/rpc.js';
import { $, el } from '../lib/dom.js';
import { state, readerLabel, roleReaders } from './ui.js';

// ---- readers and cards, live ---------------------------------------------------------------

/** Reads the readers (and the cards on them) again and shows them. */
export async function loadReaders() {
  /** @type {import('./ui.js').Reader[]} */
  let list = [];
  try {
    list = await call('readers.list', {});
  } catch (e) {
    list = [];
  }
  state.readers = new Map(list.map((r) => [r.id, r]));
  for (const r of list) if (r.card_present) await refreshCard(r.id, false);
  renderReaders();
}

/**
 * Reads the card on `readerId` again; shows the readers unless `render` is false.
 * @param {string} readerId
 * @param {boolean} [render]
 */
export async function refreshCard(readerId, render) {
  const r = state.readers.get(readerId);
  if (!r) return;
  r.card = null;
  if (r.card_present) {
    try {
      r.card = await call('card.summary', { reader_id: readerId });
    } catch (e) {
      r.card = null;
    }
  }
  if (render !== false) renderReaders();
}

export function renderReaders() {
  const box = $('readers');
  box.replaceChildren(
    ...roleReaders().map((r) => {
      let text = readerLabel(r) + '：' + (r.card_present ? '有卡' : '无卡');
      if (r.card_present && r.card) {
        text += ' · ' + r.card.card_number;
        if (r.card.balance !== null && r.card.balance !== undefined)
          text += ' · 余额 ' + r.card.balance + ' 元';
      }
      return el('span', {
        class: 'reader ' + (r.card_present ? 'present' : 'absent'),
        'data-reader': r.id,
        title: readerLabel(r),
        text,
      });
    }),
  );
}

/**
 * A reader or card event: passed on to the page (`cardd-reader-event`), and the header kept
 * current.
 * @param {import('../lib/rpc.js').CarddEvent} ev
 */
export function onEvent(ev) {
  document.dispatchEvent(new CustomEvent('cardd-reader-event', { detail: ev }));
  const r = state.readers.get('reader_id' in ev ? ev.reader_id : '');
  switch (ev.type) {
    case 'card_inserted':
      if (r) {
        r.card_present = true;
        refreshCard(ev.reader_id);
      }
      break;
    case 'card_removed':
      if (r) {
        r.card_present = false;
        r.card = null;
        renderReaders();
      }
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
