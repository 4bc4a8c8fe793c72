-- 圈存: load an amount onto the card in the reader, after the operator confirms.
--
-- The flow only orchestrates. Reading the card, the money arithmetic, the card cryptography
-- and the journal are Rust: card.load() journals the intent before the card is credited and
-- the outcome before it returns, and never credits the same run twice.

return {
  name = "card.load",
  version = "1.0.0",
  title = "圈存",
  description = "读取读卡器上的卡片，确认后将金额圈存到卡内电子钱包。",
  -- An amount with no funded record behind it: the demo-keys test mode only
  -- ([flows] unfunded_test_loads), and only for the administrator (card.load refuses any other
  -- role too). Tellers and kiosks load paid recharge records (etc.load, etc.kiosk_load).
  role = { "admin" },
  params = {
    amount = { type = "amount", required = true, min = "0.01", max = "10000.00", label = "圈存金额" },
    card_number = { type = "string", max_len = 20, label = "卡号" },
  },
  run = function(ctx, params)
    ui.progress("正在读取卡片……")
    local info = card.info()
    if params.card_number and params.card_number ~= info.card_number then
      error("卡号不符：读卡器上是 " .. info.card_number .. "，应为 " .. params.card_number .. "；请插入正确的卡")
    end
    local message = "卡内余额：" .. info.balance .. "元。圈存金额：" .. card.fen_to_yuan(params.amount) .. "元。是否圈存？"
    if not ui.confirm(message) then
      return { status = "cancelled", message = "已取消圈存" }
    end
    ui.progress("正在圈存……")
    local receipt = card.load({ amount = params.amount, expected_card = info.card_number })
    return {
      status = "ok",
      message = "圈存成功！",
      card_number = receipt.card_number,
      balance_before = card.fen_to_yuan(receipt.balance_before_fen),
      amount = card.fen_to_yuan(receipt.amount_fen),
      balance_after = card.fen_to_yuan(receipt.balance_after_fen),
      tac = receipt.tac,
    }
  end,
}
