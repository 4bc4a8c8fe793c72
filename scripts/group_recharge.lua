-- 集团充值: recharge the city one-card on the reader out of the group's quota.
--
-- The flow shows what the seed's recharge page shows (group name, operator, terminal number,
-- available quota, the card's number and balance), takes the amount (typed, or picked from the
-- presets of group.rules()), checks the seed's rules, asks for the confirmation and calls
-- group.recharge. The money is Rust: group.recharge checks the rules again, reserves the quota
-- durably before the card is credited, loads the card through the journal (exactly once) and
-- settles the order; a failed load leaves the order failed with its quota waiting for the
-- auditor's refund.

local function yuan(fen)
  return card.fen_to_yuan(fen)
end

return {
  name = "group.recharge",
  version = "1.0.0",
  title = "集团充值",
  description = "扣除集团额度对城市一卡通卡片进行充值。",
  role = { "group_operator" },
  params = {
    amount = { type = "amount", min = "0.01", max = "10000.00", label = "充值金额" },
    card_number = { type = "string", max_len = 20, label = "卡号" },
  },
  run = function(ctx, params)
    local g = group.info()
    local rules = group.rules()
    ui.progress("正在读取卡片……")
    local info = card.info()
    if info.kind ~= "city" then
      error("读卡器上的卡片不是城市一卡通，请放置要充值的城市一卡通卡片")
    end
    if params.card_number and params.card_number ~= info.card_number then
      error("卡号不符：读卡器上是 " .. info.card_number .. "，应为 " .. params.card_number .. "；请放置正确的卡片")
    end
    ui.progress("集团名称：" .. g.group_name .. "　集团操作员：" .. g.operator_name .. "　终端编号：" .. g.terminal_no
      .. "　集团可用额度：" .. g.available_quota .. "元　卡号：" .. info.card_number .. "　卡内余额：" .. info.balance .. "元")

    local amount = params.amount
    if amount == nil then
      local labels = {}
      for i, preset in ipairs(rules.presets) do
        labels[i] = preset.label
      end
      local choice = ui.choose("请选择充值金额", labels)
      for _, preset in ipairs(rules.presets) do
        if preset.label == choice then
          amount = preset.fen
        end
      end
    end
    -- The seed's rules, here for a quick answer, phrased from the rules' own figures;
    -- group.recharge checks them again.
    if amount < rules.min_fen then
      error("充值金额不能小于" .. rules.min_yuan .. "元")
    end
    if amount % rules.step_fen ~= 0 then
      error("充值金额必须是" .. rules.step_yuan .. "元的整数倍，" .. yuan(amount) .. " 元不是")
    end
    if info.balance_fen + amount > rules.card_balance_max_fen then
      error("充值后卡内金额不能超过" .. rules.card_balance_max_yuan .. "元：卡内余额 " .. info.balance .. " 元，充值 "
        .. yuan(amount) .. " 元后为 " .. yuan(info.balance_fen + amount) .. " 元")
    end
    if amount > g.available_quota_fen then
      error("集团可用额度不足：可用额度 " .. g.available_quota .. " 元，充值金额 " .. yuan(amount) .. " 元")
    end

    local message = "卡号：" .. info.card_number .. "。卡内余额：" .. info.balance .. "元。充值金额：" .. yuan(amount)
      .. "元。确认充值？"
    if not ui.confirm(message) then
      return { status = "cancelled", message = "已取消充值" }
    end
    ui.progress("正在充值……")
    local done = group.recharge({ amount = amount, card_number = info.card_number })
    if done.status == "unknown" then
      -- CREDIT was sent and the card's answer is missing: 结果待确认, never 充值失败.
      return { status = "unknown", message = done.message, order_id = done.order_id, card_number = info.card_number }
    end
    return {
      status = "ok",
      message = "充值成功！",
      group_name = g.group_name,
      order_id = done.order_id,
      card_number = done.card_number,
      balance_before = done.balance_before,
      amount = done.amount,
      balance_after = done.balance_after,
      quota_before = done.quota_before,
      quota_after = done.quota_after,
    }
  end,
}
