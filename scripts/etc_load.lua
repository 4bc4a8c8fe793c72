-- 圈存 of a recharge record (充值记录), and 二次圈存 after 修改圈存状态: the same flow.
--
-- The flow orchestrates: it finds the record, and card.settle_record checks the card on the
-- reader is the record's card and valid and settles what the card says about the record's
-- earlier loads before anything is asked: if an earlier "failed" load is on the card after
-- all, the record becomes 已圈存 and the flow says so without asking. Otherwise it asks the
-- teller with the app's own words and calls card.load_record, the journaled load in Rust,
-- which settles again under the same rules. It never credits the same record twice.

local STATUS = { not_loaded = "未圈存", loading = "圈存中", loaded = "已圈存", needs_reconciliation = "待核对" }

return {
  name = "etc.load",
  version = "1.0.0",
  title = "圈存",
  description = "核对充值记录和读卡器上的用户卡，确认后将充值金额圈存到卡内；修改圈存状态后的二次圈存也使用本业务。",
  role = { "teller", "supervisor" },
  params = {
    record_id = { type = "string", required = true, max_len = 32, label = "充值记录编号" },
  },
  run = function(ctx, params)
    ui.progress("正在查询充值记录……")
    local record = host.record(params.record_id)
    if record == nil then
      error("未找到充值记录 " .. params.record_id .. "，请重新查询充值记录")
    end
    -- 圈存中: an earlier load's outcome is not known yet; the card on the reader decides it
    -- below (card.settle_record), wherever that load was made.
    if record.status ~= "not_loaded" and record.status ~= "loading" then
      error("充值记录 " .. record.record_id .. " 为" .. (STATUS[record.status] or record.status)
        .. "，只有未圈存的记录可以圈存")
    end
    ui.progress("正在读取卡片……")
    local read, info = pcall(card.info)
    if not read then
      if record.status == "loading" then
        error("充值记录 " .. record.record_id .. " 的上一次圈存结果待确认：请将该卡重新放到读卡器上，"
          .. "系统将根据卡片确认结果；切勿重复充值")
      end
      error(info)
    end
    -- What the card says about the record's earlier loads comes before the question: money
    -- already on the card is reported, never asked for again.
    local settled = card.settle_record(record.record_id)
    if settled.already_on_card then
      return {
        status = "ok",
        already_on_card = true,
        message = "该笔充值已在卡内（卡片交易记录证实），记录已更正为已圈存，未重复圈存",
        record = settled.record,
      }
    end
    local message = "卡内余额：" .. info.balance .. "元。圈存金额：" .. card.fen_to_yuan(record.amount_fen) .. "元。是否圈存？"
    if not ui.confirm(message) then
      return { status = "cancelled", message = "已取消圈存，充值记录仍为未圈存" }
    end
    ui.progress("正在圈存，请勿移动卡片……")
    local out = card.load_record(record.record_id)
    if out.already_on_card then
      return {
        status = "ok",
        already_on_card = true,
        message = "该笔充值已在卡内（卡片交易记录证实），记录已更正为已圈存，未重复圈存",
        record = out.record,
      }
    end
    return {
      status = "ok",
      message = "圈存成功！",
      card_number = out.record.card_number,
      plate = out.record.plate,
      balance_before = out.receipt.balance_before,
      amount = out.receipt.amount,
      balance_after = out.receipt.balance_after,
      tac = out.receipt.tac,
      record = out.record,
    }
  end,
}
