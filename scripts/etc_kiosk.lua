-- 自助圈存 at a kiosk: the customer inserts an ETC card, picks one of the card's 未圈存
-- recharges, confirms, and the kiosk loads it with no operator. The same journaled load as at
-- the counter (card.load_record): a card pulled mid-load is settled from the card the next
-- time it is inserted, and nothing is loaded twice. card.settle_record settles the chosen
-- record from the card before the customer is asked: money already on the card is reported,
-- never asked for again.

local CHOICES_MAX = 32

-- How many of the card's recharges are still 未圈存 (the daemon's records), to tell the
-- customer after a load that another one is waiting.
local function pending_left(card_number)
  return #host.records_for_card(card_number, "not_loaded")
end

-- The answer for money already on the card: take the card, unless another recharge waits.
local function already_message(left)
  if left > 0 then
    return "该笔充值已在卡内，无需再次圈存"
  end
  return "该笔充值已在卡内，无需再次圈存；请取回卡片"
end

return {
  name = "etc.kiosk_load",
  version = "1.0.0",
  title = "自助圈存",
  description = "插入 ETC 用户卡，选择待圈存的充值记录，确认后圈存到卡内。",
  role = { "kiosk" },
  params = {},
  run = function(ctx, params)
    ui.progress("正在读取卡片，请勿拔卡……")
    local info = card.info()
    if info.kind ~= "etc" then
      error("请插入 ETC 用户卡")
    end
    local pending = host.records_for_card(info.card_number, "not_loaded")
    if #pending == 0 then
      return {
        status = "none",
        message = "该卡没有待圈存的充值记录",
        card_number = info.card_number,
        balance = info.balance,
      }
    end
    local chosen = pending[1]
    if #pending > 1 then
      local labels, by_label = {}, {}
      for i, r in ipairs(pending) do
        if i > CHOICES_MAX then break end
        local label = string.sub(r.recharged_at, 1, 10) .. "  " .. card.fen_to_yuan(r.amount_fen)
          .. "元  " .. r.channel .. "（" .. r.record_id .. "）"
        labels[#labels + 1] = label
        by_label[label] = r
      end
      chosen = by_label[ui.choose("该卡有 " .. #pending .. " 笔待圈存的充值，请选择", labels)]
    end
    -- What the card says about the record's earlier loads comes before the question: money
    -- already on the card is reported, never asked for again.
    local settled = card.settle_record(chosen.record_id)
    if settled.already_on_card then
      local left = pending_left(info.card_number)
      return {
        status = "ok",
        already_on_card = true,
        message = already_message(left),
        record = settled.record,
        pending_left = left,
      }
    end
    local message = "卡内余额：" .. info.balance .. "元。圈存金额：" .. card.fen_to_yuan(chosen.amount_fen) .. "元。是否圈存？"
    if not ui.confirm(message) then
      return { status = "cancelled", message = "已取消圈存，请取回卡片" }
    end
    ui.progress("正在圈存，请勿拔卡……")
    local out = card.load_record(chosen.record_id)
    if out.already_on_card then
      local left = pending_left(info.card_number)
      return {
        status = "ok",
        already_on_card = true,
        message = already_message(left),
        record = out.record,
        pending_left = left,
      }
    end
    local left = pending_left(info.card_number)
    return {
      status = "ok",
      message = left > 0 and "圈存成功！" or "圈存成功！请取回卡片",
      pending_left = left,
      card_number = out.record.card_number,
      balance_before = out.receipt.balance_before,
      amount = out.receipt.amount,
      balance_after = out.receipt.balance_after,
      record = out.record,
    }
  end,
}
