-- OBU发行: write a vehicle account's data into the OBU on the programmer and activate it.
--
-- The flow checks and asks. obu.issue (Rust) builds the files from the issuer host's vehicle
-- account, writes them with secure messaging, sets the activation flag last and reads every
-- byte back; it checks the contract serial, the expiry and the OBU's owner again, so no flow
-- can issue an OBU to the wrong vehicle. Issuing the same OBU to the same vehicle again is
-- safe (after an OBU was moved in the middle, for example): everything is rewritten and
-- verified.

-- Vehicle details a teller may enter when the vehicle account has none, with their names.
local DETAILS = {
  { "length_mm", "车长" }, { "width_mm", "车宽" }, { "height_mm", "车高" },
  { "wheels", "车轮数" }, { "axles", "车轴数" }, { "wheelbase_mm", "轴距" },
  { "load_kg_or_seats", "核定载质量/座位数" },
}

-- The details entered with the start, or nil when none were.
local function given_details(params)
  local details, any, missing = {}, false, {}
  if params.vehicle_user_type ~= nil then
    details.user_type, any = params.vehicle_user_type, true
  else
    missing[#missing + 1] = "车辆用户类型"
  end
  for _, field in ipairs(DETAILS) do
    local key, label = field[1], field[2]
    if params[key] ~= nil then
      details[key], any = params[key], true
    else
      missing[#missing + 1] = label
    end
  end
  details.description = params.description
  details.engine_number = params.engine_number
  if not any and params.description == nil and params.engine_number == nil then
    return nil
  end
  if #missing > 0 then
    error("车辆信息不完整：请填写" .. table.concat(missing, "、"))
  end
  return details
end

local function plate_text(plate, label)
  return plate .. "（" .. label .. "）"
end

return {
  name = "obu.issue",
  version = "1.0.0",
  title = "OBU发行",
  description = "读取发行器上的OBU，核对车辆账户后写入系统信息和车辆信息并激活OBU，写后逐字节核对。",
  role = { "teller", "supervisor" },
  params = {
    plate = { type = "string", required = true, max_len = 16, label = "车牌号" },
    plate_colour = { type = "integer", required = true, min = 0, max = 99, label = "车牌颜色" },
    vehicle_user_type = { type = "integer", min = 0, max = 255, label = "车辆用户类型" },
    length_mm = { type = "integer", min = 1, max = 65535, label = "车长（毫米）" },
    width_mm = { type = "integer", min = 1, max = 65535, label = "车宽（毫米）" },
    height_mm = { type = "integer", min = 1, max = 65535, label = "车高（毫米）" },
    wheels = { type = "integer", min = 1, max = 255, label = "车轮数" },
    axles = { type = "integer", min = 1, max = 255, label = "车轴数" },
    wheelbase_mm = { type = "integer", min = 1, max = 65535, label = "轴距（毫米）" },
    load_kg_or_seats = { type = "integer", min = 0, max = 16777215, label = "核定载质量（千克）/座位数" },
    description = { type = "string", max_len = 16, label = "车辆描述" },
    engine_number = { type = "string", max_len = 14, label = "发动机号" },
  },
  run = function(ctx, params)
    local details = given_details(params)

    ui.progress("正在读取OBU……")
    local info = obu.info()

    local vehicle = host.vehicle(params.plate, params.plate_colour)
    if not vehicle then
      error("未找到车辆账户：" .. params.plate .. "。请核对车牌号和车牌颜色，或先为该车辆开户")
    end
    local account = plate_text(vehicle.plate, vehicle.plate_colour.label)
    if vehicle.obu_contract_serial == nil or vehicle.obu_contract_serial == "" then
      error("车辆账户 " .. account .. " 未登记OBU合同序列号，不能发行OBU；请先在车辆账户中登记该车的OBU")
    end
    if info.obu_number ~= vehicle.obu_contract_serial then
      error("OBU合同序列号不符：发行器上的OBU为 " .. info.obu_number .. "，车辆账户 " .. account
        .. " 登记的是 " .. vehicle.obu_contract_serial .. "；请放上该车辆的OBU")
    end
    if info.expired then
      error("OBU合同已于 " .. info.expiry_date .. " 到期，不能发行；请更换OBU")
    end
    if info.activated then
      local on_obu = info.vehicle
      if on_obu == nil then
        error("该OBU已激活，但无法读取其车辆信息以确认归属；不能发行，请联系管理员")
      end
      if on_obu.plate ~= vehicle.plate or on_obu.plate_colour ~= vehicle.plate_colour.code then
        error("该OBU已激活并发行给 " .. plate_text(on_obu.plate, on_obu.plate_colour_label)
          .. "，不能再发行给 " .. account)
      end
    end

    local plan = obu.plan({ plate = vehicle.plate, plate_colour = vehicle.plate_colour.code, details = details })
    local d = plan.details
    local lines = {
      "OBU号：" .. plan.obu_number,
      "车牌号：" .. account,
      "车型：" .. plan.vehicle_class_label,
      "车辆用户类型：" .. plan.vehicle_user_type_label,
      "车长×车宽×车高：" .. d.length_mm .. "×" .. d.width_mm .. "×" .. d.height_mm .. " 毫米",
      "车轮数/车轴数：" .. d.wheels .. "/" .. d.axles,
      "轴距：" .. d.wheelbase_mm .. " 毫米",
      "核定载质量/座位数：" .. d.load_kg_or_seats,
    }
    if d.description ~= "" then lines[#lines + 1] = "车辆描述：" .. d.description end
    if d.engine_number ~= "" then lines[#lines + 1] = "发动机号：" .. d.engine_number end
    local writes = "车辆信息、激活标志"
    if info.dates_missing then writes = "系统信息（签约日期、有效期）、" .. writes end
    if info.activated then
      lines[#lines + 1] = "该OBU已激活，将按车辆账户重新写入。"
    end
    lines[#lines + 1] = "将写入" .. writes .. "。是否发行？"
    if not ui.confirm(table.concat(lines, "\n")) then
      return { status = "cancelled", message = "已取消OBU发行" }
    end

    ui.progress("正在写入OBU……")
    local report = obu.issue({ plate = vehicle.plate, plate_colour = vehicle.plate_colour.code, details = details })
    report.status = "ok"
    report.message = "OBU发行成功！已写入" .. table.concat(report.written_labels, "、") .. "，读回核对一致。"
    return report
  end,
}
