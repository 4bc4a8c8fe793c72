// @ts-check
// 待核对 (supervisors and auditors): loads the host authorised that no card settled (the card
// never came back, or its proof failed). Two people decide each: one proposes 已到账 or 未到账
// with a reason, a different auditor confirms or rejects. The card checks a confirmed verdict
// at its next load; one it contradicts comes back here with the card's evidence.

import { el } from '../../lib/dom.js';
import { yuan } from '../../lib/money.js';
import { call } from '../rpc.js';
import { alertBox, askText, confirmBox, errorBox, fields, fill, may, me, when } from '../ui.js';

/** @typedef {import('../api').ReviewItem} ReviewItem */

/** What the host's authorisation state is called. */
const STATES = {
  authorized: '已授权，卡片未回到读卡器（结果待确认）',
  reconcile: '待核对（卡片证明失败或与核定结论不符）',
};

/** What a verdict's state and the card's check are called. */
const VERDICT_STATES = { proposed: '待确认', rejected: '已驳回', confirmed: '已确认' };
const CARD_CHECKS = {
  waiting: '等待卡片下次圈存时核对',
  agreed: '卡片与核定结论一致',
  contradicted: '卡片与核定结论不符',
};

/** @param {boolean} landed */
const landedText = (landed) => (landed ? '已到账（金额在卡内）' : '未到账（金额未进入卡内）');

/** @type {import('../backoffice.js').Page} */
export const page = {
  id: 'review',
  title: '待核对',
  method: 'review.pending',
  render(main) {
    const out = el('div', { id: 'review-result' });
    main.append(
      el('p', {
        class: 'hint',
        text:
          '后台已发出圈存授权、但卡片一直没有证明结果的圈存（卡片遗失、损坏或未再出示，' +
          '或卡片证明失败）。请核对卡内余额、交易记录或客户凭证后，由一人申请核定' +
          '（已到账或未到账，并填写原因），再由另一位审核员确认；确认后充值记录或订单随之改变。' +
          '该卡下次圈存时系统会用卡片核对结论，不符的会回到本页。',
      }),
      out,
    );
    /**
     * @param {ReviewItem} i
     * @param {boolean} landed
     */
    const propose = (i, landed) => async () => {
      const reason = await askText(
        '申请核定交易 ' + i.txn_id + '（卡号 ' + i.card_number + '，' + yuan(i.amount) + '）为“' +
          landedText(landed) + '”。请写明核对了哪些证据：',
        '核定原因',
      );
      if (!reason) return;
      try {
        await call('review.propose', { txn_id: i.txn_id, landed, reason });
        await alertBox('核定申请已提交，等待另一位审核员确认。', '待核对');
      } catch (err) {
        await errorBox(err, '申请核定未完成');
      }
      load();
    };
    /**
     * @param {ReviewItem} i
     * @param {boolean} confirm
     */
    const decide = (i, confirm) => async () => {
      const v = i.verdict;
      if (!v) return;
      const ok = await confirmBox(
        (confirm ? '确认' : '驳回') + ' ' + v.proposed_by + ' 的核定申请：交易 ' + i.txn_id +
          ' ' + landedText(v.landed) + '。原因：' + v.reason +
          (confirm ? '。确认后充值记录或订单将按此结论修改。' : ''),
        '待核对',
        confirm ? '确认核定' : '驳回申请',
      );
      if (!ok) return;
      try {
        await call('review.decide', { txn_id: i.txn_id, confirm });
        await alertBox(confirm ? '核定已确认，记录已修改。' : '核定申请已驳回。', '待核对');
      } catch (err) {
        await errorBox(err, confirm ? '确认核定未完成' : '驳回未完成');
      }
      load();
    };
    /** @param {ReviewItem} i */
    const card = (i) => {
      const v = i.verdict;
      const proposed = v && v.state === 'proposed';
      const mine = proposed && v.proposed_by === me().username;
      return el(
        'div',
        { class: 'evidence-card', id: 'review-' + i.txn_id, 'data-state': i.state },
        el('h3', {}, '交易 ' + i.txn_id),
        fields([
          ['卡号', i.card_number],
          ['圈存金额', yuan(i.amount)],
          ['圈存站点', i.site_id],
          [i.funding_kind === 'group_order' ? '集团充值订单' : '充值记录', i.funding_id],
          ['后台状态', STATES[i.state]],
          ['说明', i.why],
          ['授权时间', when(i.authorized_at)],
          ['授权时卡内余额', yuan(i.balance_before)],
          ['若已到账，卡内余额应为', yuan(i.balance_if_landed)],
          ['授权时联机交易序号', String(i.online_atc)],
          ['核定结论', v ? landedText(v.landed) + '（' + VERDICT_STATES[v.state] + '）' : null],
          ['核定原因', v ? v.reason : null],
          ['申请人', v ? v.proposed_by + ' ' + when(v.proposed_at) : null],
          ['确认或驳回', v && v.decided_by ? v.decided_by + ' ' + when(v.decided_at) : null],
          ['卡片核对', v && v.state === 'confirmed' ? CARD_CHECKS[v.card_check] : null],
          ['卡片证据', v ? v.card_evidence : null],
        ]),
        el(
          'div',
          { class: 'row-actions' },
          !i.decidable
            ? el('p', {
                class: 'hint',
                text: '卡片可能还会回到读卡器，请在 ' + when(i.decidable_at) + ' 之后再核定。',
              })
            : null,
          i.decidable && !proposed
            ? [
                el('button', {
                  type: 'button',
                  class: 'propose-landed',
                  text: '申请核定：已到账',
                  onclick: propose(i, true),
                }),
                el('button', {
                  type: 'button',
                  class: 'propose-not-landed warn',
                  text: '申请核定：未到账',
                  onclick: propose(i, false),
                }),
              ]
            : null,
          proposed && mine
            ? el('p', { class: 'hint', text: '您提出的核定申请须由另一位审核员确认或驳回。' })
            : null,
          proposed && !mine && may('review.decide')
            ? [
                el('button', {
                  type: 'button',
                  class: 'confirm',
                  text: '确认核定',
                  onclick: decide(i, true),
                }),
                el('button', {
                  type: 'button',
                  class: 'reject warn',
                  text: '驳回申请',
                  onclick: decide(i, false),
                }),
              ]
            : null,
        ),
      );
    };
    const load = () =>
      fill(
        out,
        () => call('review.pending', {}),
        (rows) =>
          rows.length === 0
            ? el('p', { class: 'empty', text: '没有待核对的圈存。' })
            : el('div', {}, rows.map(card)),
      );
    load();
  },
};
