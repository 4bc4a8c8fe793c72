// @ts-check
// The auditor's pages: 额度充值审核, 退款审核, 待核对圈存 (with 挂失核定).

import { call } from '../lib/rpc.js';
import { $, el } from '../lib/dom.js';
import { yuan } from '../lib/money.js';
import { confirmBox, alertBox, errorBox, askText, when, table, role, hasMethod } from './ui.js';

// ---- auditor pages -------------------------------------------------------------------------

/** @param {HTMLElement} main */
export function pageAuditTopUps(main) {
  const out = el('div', { id: 'at-result' });
  main.append(
    el('p', {
      class: 'hint',
      text: '银行已付款的额度充值，审核通过后集团额度增加；每笔只能审核一次。',
    }),
    out,
  );
  const load = async () => {
    let p;
    try {
      p = await call('group.audit.pending', {});
    } catch (err) {
      errorBox(err, '查询失败');
      return;
    }
    const rows = p.topups || [];
    /**
     * @param {import('../types/rpc').AuditPending['topups'][number]} t
     * @param {boolean} approve
     */
    const decide = (t, approve) => async () => {
      const reason = await askText(
        (approve ? '通过' : '驳回') + '额度充值 ' + t.topup_id + '（' + t.amount + ' 元）',
        '审核意见',
      );
      if (!reason) return;
      try {
        await call('group.audit.topup', { topup_id: t.topup_id, approve, reason });
        await alertBox(approve ? '审核通过，集团额度已增加。' : '已驳回。', '额度充值审核');
      } catch (err) {
        await errorBox(err, '审核未完成');
      }
      load();
    };
    out.replaceChildren(
      rows.length === 0
        ? el('p', { class: 'empty', text: '没有待审核的额度充值。' })
        : table(
            [
              ['集团编号', (t) => t.group_id],
              ['订单编号', (t) => t.topup_id],
              ['转账金额', (t) => yuan(t.amount)],
              ['银行返回流水号', (t) => t.bank_serial],
              ['备注', (t) => t.remark],
              ['操作员', (t) => t.operator_name || t.operator],
              ['转账时间', (t) => when(t.created_at)],
              [
                '操作',
                (t) =>
                  el(
                    'span',
                    { class: 'row-actions' },
                    el('button', {
                      type: 'button',
                      text: '通过',
                      'data-decision': 'approve',
                      onclick: decide(t, true),
                    }),
                    el('button', {
                      type: 'button',
                      class: 'warn',
                      text: '驳回',
                      'data-decision': 'reject',
                      onclick: decide(t, false),
                    }),
                  ),
              ],
            ],
            rows,
            'at-table',
          ),
    );
  };
  load();
}

/** @param {HTMLElement} main */
export function pageAuditRefunds(main) {
  const out = el('div', { id: 'ar-result' });
  main.append(
    el('p', {
      class: 'hint',
      text: '充值失败的订单：按卡片证据决定退回额度（卡内未到账）或改为充值成功（卡内已到账）；结果未确定时请出示卡片。',
    }),
    out,
  );
  const load = async () => {
    let p;
    try {
      p = await call('group.audit.pending', {});
    } catch (err) {
      errorBox(err, '查询失败');
      return;
    }
    const rows = p.orders || [];
    /**
     * @param {import('../types/rpc').AuditPending['orders'][number]} ev
     * @param {'group.audit.refund' | 'group.audit.resolve'} method
     * @param {string} label
     */
    const decide = (ev, method, label) => async () => {
      const reason = await askText(
        label + '：订单 ' + ev.order.order_id + '（' + ev.order.amount + ' 元）。' + ev.message,
        '审核意见',
      );
      if (!reason) return;
      try {
        await call(method, { order_id: ev.order.order_id, reason });
        await alertBox(label + '已完成。', '退款审核');
      } catch (err) {
        await errorBox(err, label + '未完成');
      }
      load();
    };
    out.replaceChildren(
      rows.length === 0
        ? el('p', { class: 'empty', text: '没有待审核的失败订单。' })
        : table(
            [
              ['订单编号', (e) => e.order.order_id],
              ['卡号', (e) => e.order.card_number],
              ['充值金额', (e) => yuan(e.order.amount)],
              ['操作员', (e) => e.order.operator_name || e.order.operator],
              ['充值时间', (e) => when(e.order.created_at)],
              ['卡片证据', (e) => e.message],
              [
                '操作',
                (e) =>
                  el(
                    'span',
                    { class: 'row-actions' },
                    e.verdict === 'not_landed'
                      ? el('button', {
                          type: 'button',
                          text: '退款',
                          onclick: decide(e, 'group.audit.refund', '退回额度'),
                        })
                      : null,
                    e.verdict === 'landed'
                      ? el('button', {
                          type: 'button',
                          text: '改为充值成功',
                          onclick: decide(e, 'group.audit.resolve', '改为充值成功'),
                        })
                      : null,
                  ),
              ],
            ],
            rows,
            'ar-table',
          ),
    );
  };
  load();
}

/** @param {HTMLElement} main */
export function pageJournalOpen(main) {
  const out = el('div', { id: 'jo-result' });
  const lost = el('div', { id: 'jo-lost' });
  const restored = el('div', { id: 'jo-restored' });
  main.append(
    el('p', {
      class: 'hint',
      text: '卡片无法证明结果的圈存：请核对卡内余额和交易记录（或客户凭证）后判定是否已到账，并填写原因；结果为“待确认”的交易请将卡片放到读卡器上，由系统读卡确认。',
    }),
    el('p', {
      class: 'hint',
      text: '卡片遗失、损坏或锁定无法读卡时：等待期满后由主管申请挂失核定，再由另一位审核人员确认；该卡以后再出现时，系统先按核定结论核对卡片。',
    }),
    out,
    el('h3', { text: '挂失核定' }),
    lost,
    restored,
  );
  /**
   * @param {string} label
   * @param {() => Promise<unknown>} call_
   */
  const done = async (label, call_) => {
    try {
      await call_();
      await alertBox(label + '已记录。', '待核对圈存');
    } catch (err) {
      await errorBox(err, label + '未完成');
    }
    load();
  };
  /** @typedef {import('../types/rpc').OpenLoad} OpenLoad */
  /**
   * @param {OpenLoad} t
   * @param {boolean} landed
   */
  const decide = (t, landed) => async () => {
    const label = landed ? '判定已到账' : '判定未到账';
    const reason = await askText(
      label +
        '：交易 ' +
        t.txn_id +
        '，卡号 ' +
        t.card_number +
        '，金额 ' +
        yuan(t.amount) +
        '。请写明核对依据。',
      '核对原因',
    );
    if (!reason) return;
    done(label, () => call('journal.resolve', { txn_id: t.txn_id, landed, reason }));
  };
  /**
   * @param {OpenLoad} t
   * @param {boolean} landed
   */
  const propose = (t, landed) => async () => {
    const label = '挂失核定申请（' + (landed ? '已到账' : '未到账') + '）';
    const reason = await askText(
      label +
        '：交易 ' +
        t.txn_id +
        '，卡号 ' +
        t.card_number +
        '，金额 ' +
        yuan(t.amount) +
        '。请写明卡片遗失、损坏或锁定的情况和核对依据。',
      '原因',
    );
    if (!reason) return;
    done(label, () => call('journal.propose_lost_card', { txn_id: t.txn_id, landed, reason }));
  };
  /** @param {OpenLoad} t */
  const confirmLost = (t) => async () => {
    const p = /** @type {NonNullable<OpenLoad['lost_card_proposal']>} */ (t.lost_card_proposal);
    const label = '确认挂失核定（' + (p.landed ? '已到账' : '未到账') + '）';
    const ok = await confirmBox(
      label +
        '：交易 ' +
        t.txn_id +
        '，卡号 ' +
        t.card_number +
        '，金额 ' +
        yuan(t.amount) +
        '。申请人 ' +
        (p.proposed_by_name || p.proposed_by) +
        '，原因：' +
        p.reason,
      '确认挂失核定',
    );
    if (!ok) return;
    done(label, () => call('journal.confirm_lost_card', { txn_id: t.txn_id, landed: p.landed }));
  };
  /** @param {import('../types/rpc').RestoredItem} r */
  const clearRestored = (r) => async () => {
    const reason = await askText(
      '系统已从备份恢复。充值记录 ' +
        r.record_id +
        '（卡号 ' +
        r.card_number +
        '，金额 ' +
        yuan(r.amount) +
        '）：请核对卡片交易记录与后台记录，确认该笔充值在备份之后未曾圈存，并写明核对依据。',
      '核对依据',
    );
    if (!reason) return;
    done('恢复核对结果', () =>
      call('journal.restored_clear', {
        card_number: r.card_number,
        record_id: r.record_id || '',
        reason,
      }),
    );
  };
  /** @param {import('../types/rpc').Restored} r */
  const showRestored = (r) => {
    if (!r.restored) {
      restored.replaceChildren();
      return;
    }
    /** @type {[string, (f: import('../types/rpc').RestoredFound) => unknown][]} */
    const foundColumns = [
      ['卡号', (f) => f.card_number],
      ['充值记录', (f) => f.record_id || f.order_id || ''],
      ['金额', (f) => yuan(f.amount)],
      ['卡内交易时间', (f) => f.card_time],
      ['联机交易序号', (f) => String(f.online_atc)],
    ];
    restored.replaceChildren(
      el('h3', { text: '系统恢复核对' }),
      el('p', {
        class: 'hint',
        text:
          '系统已于 ' +
          when(r.restored_at || '') +
          ' 从 ' +
          when(r.backup_created_at || '') +
          ' 的备份恢复。备份中未圈存的充值记录，在圈存前先读取卡片交易记录核对，已在卡内的不再圈存。',
      }),
      el('h4', { text: '等待读卡核对' }),
      r.waiting.length === 0
        ? el('p', { class: 'empty', text: '没有等待核对的充值记录。' })
        : table(
            [
              ['卡号', (w) => w.card_number],
              ['充值记录', (w) => w.record_id || w.order_id || ''],
              ['金额', (w) => yuan(w.amount)],
              [
                '操作',
                (w) =>
                  role() === 'supervisor' && w.record_id
                    ? el('button', {
                        type: 'button',
                        class: 'secondary',
                        text: '核对无误，允许圈存',
                        onclick: clearRestored(w),
                      })
                    : null,
              ],
            ],
            r.waiting,
            'jo-restored-waiting',
          ),
      el('h4', { text: '卡片证实备份后已圈存（已更正为已圈存，未重复圈存）' }),
      r.loaded_since_backup.length === 0
        ? el('p', { class: 'empty', text: '无。' })
        : table(foundColumns, r.loaded_since_backup, 'jo-restored-found'),
      el('h4', { text: '卡内有本终端圈存但备份中无对应记录（请与后台核对）' }),
      r.unaccounted.length === 0
        ? el('p', { class: 'empty', text: '无。' })
        : table(foundColumns, r.unaccounted, 'jo-restored-orphans'),
    );
  };
  /** @param {import('../types/rpc').LostCardRow} v */
  const clearWatch = (v) => async () => {
    const reason = await askText(
      '卡号 ' +
        v.card_number +
        ' 的卡片与挂失核定结论不符（交易 ' +
        v.txn_id +
        '）。请写明处理情况。',
      '处理情况',
    );
    if (!reason) return;
    done('处理结果', () => call('journal.clear_watch', { txn_id: v.txn_id, reason }));
  };
  /** @param {OpenLoad} t */
  const actions = (t) => {
    const buttons = [];
    const lostAllowed =
      t.lost_card_allowed_from && new Date(t.lost_card_allowed_from) <= new Date();
    if (t.state === 'needs_reconciliation') {
      buttons.push(
        el('button', { type: 'button', text: '已到账', onclick: decide(t, true) }),
        el('button', {
          type: 'button',
          class: 'secondary',
          text: '未到账',
          onclick: decide(t, false),
        }),
      );
    }
    if (role() === 'supervisor' && lostAllowed && !t.lost_card_proposal) {
      buttons.push(
        el('button', {
          type: 'button',
          class: 'secondary',
          text: '挂失核定：已到账',
          onclick: propose(t, true),
        }),
        el('button', {
          type: 'button',
          class: 'secondary',
          text: '挂失核定：未到账',
          onclick: propose(t, false),
        }),
      );
    }
    if (role() === 'auditor' && t.lost_card_proposal) {
      buttons.push(el('button', { type: 'button', text: '确认挂失核定', onclick: confirmLost(t) }));
    }
    return buttons.length ? el('span', { class: 'row-actions' }, buttons) : null;
  };
  /** @param {OpenLoad} t */
  const status = (t) => {
    const base =
      t.state === 'needs_reconciliation' ? '待核对：' + (t.reason || '') : '待确认：请出示卡片';
    if (t.lost_card_proposal)
      return (
        base +
        '；挂失核定申请中（' +
        (t.lost_card_proposal.landed ? '已到账' : '未到账') +
        '，申请人 ' +
        (t.lost_card_proposal.proposed_by_name || t.lost_card_proposal.proposed_by) +
        '）'
      );
    return base + '；' + when(t.lost_card_allowed_from) + ' 后可办理挂失核定';
  };
  const load = async () => {
    let rows;
    let verdicts;
    try {
      rows = await call('journal.open', {});
      verdicts = await call('journal.lost_cards', {});
    } catch (err) {
      errorBox(err, '查询失败');
      return;
    }
    out.replaceChildren(
      rows.length === 0
        ? el('p', { class: 'empty', text: '没有待核对的圈存。' })
        : table(
            [
              ['交易编号', (t) => t.txn_id],
              ['卡号', (t) => t.card_number],
              ['金额', (t) => yuan(t.amount)],
              ['圈存前余额', (t) => yuan(t.balance_before)],
              ['记录时间', (t) => when(t.created_at)],
              ['状态', status],
              ['操作', actions],
            ],
            rows,
            'jo-table',
          ),
    );
    const settled = verdicts.filter((v) => v.status !== 'proposed');
    lost.replaceChildren(
      settled.length === 0
        ? el('p', { class: 'empty', text: '没有挂失核定记录。' })
        : table(
            [
              ['交易编号', (v) => v.txn_id],
              ['卡号', (v) => v.card_number],
              ['结论', (v) => (v.landed ? '已到账' : '未到账')],
              ['申请人', (v) => v.proposed_by_name || v.proposed_by],
              ['确认人', (v) => v.confirmed_by_name || v.confirmed_by],
              ['原因', (v) => v.reason],
              ['状态', (v) => v.status_label],
              [
                '操作',
                (v) =>
                  role() === 'auditor' && v.status === 'card_contradicted'
                    ? el('button', { type: 'button', text: '已处理', onclick: clearWatch(v) })
                    : null,
              ],
            ],
            settled,
            'jo-lost-table',
          ),
    );
    if (hasMethod('journal.restored')) {
      try {
        showRestored(await call('journal.restored', {}));
      } catch (err) {
        restored.replaceChildren(el('p', { class: 'error', text: String(err) }));
      }
    }
  };
  load();
}
