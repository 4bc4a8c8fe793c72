-- 批量充值: recharge the cards of a batch (group.batch.create) one after the other.
--
-- For each card still to do, the flow asks the operator to put it on the reader and waits
-- (pausing for the next card); the card on the reader may be any card of the batch still to do.
-- Each card is one group.recharge (quota reserved, card loaded through the journal, order
-- settled), so a batch interrupted by a crash goes on where it stopped when the flow is started
-- again: cards already recharged or failed keep their outcome. Several runs on several readers
-- may work on the same batch; a card is recharged at most once. The result is the per-card
-- report.

-- The message of an error raised by a module call, without the Lua location and traceback.
local function reason(err)
  local text = tostring(err)
  text = string.match(text, "^runtime error: (.-)\n") or string.match(text, "^runtime error: (.*)$") or text
  return text
end

return {
  name = "group.batch_recharge",
  version = "1.0.0",
  title = "批量充值",
  description = "按批次逐张为城市一卡通卡片充值：放好一张卡后确认，可跳过、暂停，中断后可继续。",
  role = { "group_operator" },
  params = {
    batch_id = { type = "string", required = true, max_len = 32, label = "批次编号" },
  },
  run = function(ctx, params)
    local skipped = {}
    local refused = {}
    local attempts = 0
    while true do
      local report = group.batch(params.batch_id)
      local next_item = nil
      for _, item in ipairs(report.items) do
        if item.status == "pending" and not skipped[item.index] then
          next_item = item
          break
        end
      end
      local finished = report.succeeded + report.failed + report.in_progress
      if next_item == nil then
        if report.pending == 0 then
          local waiting = ""
          if report.in_progress > 0 then
            waiting = "，结果待确认 " .. report.in_progress .. " 张（请将这些卡片重新放到读卡器上，系统将根据卡片确认结果；切勿重复充值）"
          end
          return { status = "done", message = "批量充值完成：成功 " .. report.succeeded .. " 张，失败 " .. report.failed .. " 张" .. waiting,
                   report = report, refused = refused }
        end
        return { status = "paused", message = "批量充值已暂停：还有 " .. report.pending .. " 张卡待充值", report = report, refused = refused }
      end
      attempts = attempts + 1
      if attempts > 3 * report.total + 3 then
        return { status = "paused", message = "尝试次数过多，批量充值已暂停", report = report, refused = refused }
      end
      ui.progress("批量充值进度：" .. finished .. "/" .. report.total, { done = finished, total = report.total })
      local answer = ui.choose("请将卡号 " .. next_item.card_number .. " 的卡片放到读卡器上（第 " .. (next_item.index + 1)
        .. "/" .. report.total .. " 张，充值 " .. next_item.amount .. " 元）", { "已放好", "跳过此卡", "暂停" })
      if answer == "暂停" then
        return { status = "paused", message = "批量充值已暂停，可随时继续", report = group.batch(params.batch_id), refused = refused }
      elseif answer == "跳过此卡" then
        skipped[next_item.index] = true
      else
        local ok, info = pcall(card.info)
        if not ok then
          ui.progress("读卡失败：" .. reason(info))
        else
          local target = nil
          for _, item in ipairs(report.items) do
            if item.status == "pending" and item.card_number == info.card_number then
              target = item
            end
          end
          if target == nil then
            ui.progress("读卡器上的卡片 " .. info.card_number .. " 不是本批次待充值的卡片")
          else
            local done, result = pcall(group.recharge, {
              amount = target.amount_fen, card_number = target.card_number,
              batch_id = params.batch_id, item = target.index,
            })
            -- Tried once per run: a refused card (over the card's ceiling, quota short) is not offered
            -- again until the batch is started again.
            skipped[target.index] = true
            if done and result.status == "unknown" then
              ui.progress("卡号 " .. target.card_number .. "：" .. result.message)
            elseif done then
              ui.progress("卡号 " .. target.card_number .. " 充值成功，现余额 " .. result.balance_after .. " 元")
            else
              table.insert(refused, { card_number = target.card_number, message = reason(result) })
              ui.progress("卡号 " .. target.card_number .. "：" .. reason(result))
            end
          end
        end
      end
    end
  end,
}
