-- The control API under /sandbox/: unsigned JSON endpoints with which
-- tests and developers inspect and steer the sandbox.  The server
-- listens on loopback only, so only local processes reach it.
--
--   GET    /sandbox/health        {"ok": true}
--   POST   /sandbox/reset         clear staff, assignments, faults, the
--                                 request log, recent nonces and the
--                                 clock skew; restore the initial stores
--   GET    /sandbox/stores        [store_id, ...]
--   POST   /sandbox/stores        {"store_id": N} adds a store
--   GET    /sandbox/guides        every guide, name and mobile in plain text
--   POST   /sandbox/guides        {"store_id", "name", "mobile", "userid"?,
--                                 "work_id"?, "sub_mchid"?} adds a guide
--   GET    /sandbox/assignments   [{guide_id, out_trade_no, sub_mchid?}]
--   GET    /sandbox/requests      the last 100 /v3/ requests
--   GET    /sandbox/clock         {"skew", "now"}
--   POST   /sandbox/clock         {"skew": seconds} shifts the sandbox clock
--   GET    /sandbox/faults        the armed faults
--   POST   /sandbox/faults        arms a fault (see faults.lua)
--   DELETE /sandbox/faults        disarms every fault
local core = require("wechatpay.core")
local smartguide = require("wechatpay.sandbox.smartguide")
local util = require("wechatpay.sandbox.util")

local _M = {}
local mt = { __index = _M }

-- The clock may move by up to ten years either way.
local MAX_SKEW = 10 * 365 * 86400

local function json_response(status, value)
    local body = assert(core.json_encode(value))
    return {
        status = status,
        headers = { { "Content-Type", "application/json" } },
        body = body,
    }
end

local function error_response(status, code, message)
    return json_response(status, { code = code, message = message })
end

local function list(items)
    if #items == 0 then
        return core.empty_array
    end
    return items
end

-- Returns the request body as a JSON object ({} when empty), or nil and
-- an error response.
local function json_object(request)
    if request.body == "" then
        return {}
    end
    local value, err = core.json_decode(request.body)
    if type(value) ~= "table" or value[1] ~= nil or value == core.empty_array then
        return nil, error_response(400, "INVALID_REQUEST",
            "the body must be a JSON object" .. (err and (": " .. err) or ""))
    end
    return value
end

local function check_plain_text(value, name, max_bytes)
    if type(value) ~= "string" or value == "" or #value > max_bytes then
        return nil, name .. " must be a string of 1 to " .. max_bytes .. " bytes"
    end
    local ok, problem = core.utf8_check(value)
    if not ok then
        return nil, name .. ": " .. problem
    end
    return value
end

-- Creates the control API.  opts: state, faults, keys.
function _M.new(opts)
    local self = setmetatable({ state = opts.state, faults = opts.faults, keys = opts.keys },
        mt)
    self.routes = {
        ["GET /sandbox/health"] = self.health,
        ["POST /sandbox/reset"] = self.reset,
        ["GET /sandbox/stores"] = self.list_stores,
        ["POST /sandbox/stores"] = self.add_store,
        ["GET /sandbox/guides"] = self.list_guides,
        ["POST /sandbox/guides"] = self.add_guide,
        ["GET /sandbox/assignments"] = self.list_assignments,
        ["GET /sandbox/requests"] = self.list_requests,
        ["GET /sandbox/clock"] = self.get_clock,
        ["POST /sandbox/clock"] = self.set_clock,
        ["GET /sandbox/faults"] = self.list_faults,
        ["POST /sandbox/faults"] = self.add_fault,
        ["DELETE /sandbox/faults"] = self.clear_faults,
    }
    return self
end

function _M:health()
    return json_response(200, { ok = true })
end

function _M:reset()
    self.state:reset()
    self.faults:clear()
    return json_response(200, { ok = true })
end

function _M:list_stores()
    return json_response(200, list(self.state:store_ids()))
end

function _M:add_store(request)
    local body, failure = json_object(request)
    if not body then
        return failure
    end
    local store_id = body.store_id
    if math.type(store_id) ~= "integer" or store_id < 0 then
        return error_response(400, "PARAM_ERROR", "store_id must be a non-negative integer")
    end
    self.state:add_store(store_id)
    return json_response(200, { ok = true, store_id = store_id })
end

function _M:list_guides()
    local guides = {}
    for i, guide in ipairs(self.state.guides) do
        guides[i] = {
            guide_id = guide.guide_id,
            store_id = guide.store_id,
            sub_mchid = guide.scope ~= "" and guide.scope or nil,
            corpid = guide.corpid,
            userid = guide.userid,
            work_id = guide.work_id,
            name = guide.name,
            mobile = guide.mobile,
            qr_code = guide.qr_code,
            avatar = guide.avatar,
            group_qrcode = guide.group_qrcode,
        }
    end
    return json_response(200, list(guides))
end

-- Adds a guide directly, for example one with a work_id, which staff
-- of personal-WeChat merchants have and the register API cannot set.
function _M:add_guide(request)
    local body, failure = json_object(request)
    if not body then
        return failure
    end
    local store_id = body.store_id
    if math.type(store_id) ~= "integer" or not self.state:has_store(store_id) then
        return error_response(400, "PARAM_ERROR", "store_id must name an existing store")
    end
    local guide = { guide_id = smartguide.new_guide_id(), store_id = store_id }
    local problem
    guide.name, problem = check_plain_text(body.name, "name", 64)
    if guide.name then
        guide.mobile, problem = check_plain_text(body.mobile, "mobile", 32)
    end
    for _, field in ipairs({ "userid", "work_id", "sub_mchid" }) do
        if not problem and body[field] ~= nil then
            guide[field], problem = check_plain_text(body[field], field, 64)
        end
    end
    if problem then
        return error_response(400, "PARAM_ERROR", problem)
    end
    guide.scope = guide.sub_mchid or ""
    guide.sub_mchid = nil
    self.state:add_guide(guide)
    return json_response(200, { guide_id = guide.guide_id })
end

function _M:list_assignments()
    return json_response(200, list(self.state.assignments))
end

function _M:list_requests()
    return json_response(200, list(self.state:logged_requests()))
end

function _M:get_clock()
    return json_response(200, { skew = self.state.clock_skew, now = self.state:now() })
end

function _M:set_clock(request)
    local body, failure = json_object(request)
    if not body then
        return failure
    end
    local skew = body.skew
    if math.type(skew) ~= "integer" or math.abs(skew) > MAX_SKEW then
        return error_response(400, "PARAM_ERROR", "skew must be an integer number of seconds"
            .. " within ten years (" .. MAX_SKEW .. ")")
    end
    self.state.clock_skew = skew
    return self:get_clock()
end

function _M:list_faults()
    return json_response(200, list(self.faults:list()))
end

function _M:add_fault(request)
    local body, failure = json_object(request)
    if not body then
        return failure
    end
    local fault, err = self.faults:add(body)
    if not fault then
        return error_response(400, "PARAM_ERROR", err)
    end
    if fault.fault == "wrong_key" then
        -- Generates the stray key now rather than inside the faulty response.
        self.keys:stray_key()
    end
    return json_response(200, fault)
end

function _M:clear_faults()
    self.faults:clear()
    return json_response(200, { ok = true })
end

-- Handles one /sandbox/ request and returns the response.
function _M:handle(request)
    local handler = self.routes[request.method .. " " .. request.path]
    if handler then
        return handler(self, request)
    end
    for key in pairs(self.routes) do
        if key:match("^%S+ (.*)$") == request.path then
            return error_response(405, "METHOD_NOT_ALLOWED", util.printable(request.method)
                .. " is not allowed on " .. request.path)
        end
    end
    return error_response(404, "NOT_FOUND", "no control endpoint at "
        .. util.printable(request.path)
        .. "; see the list in wechatpay/sandbox/control.lua")
end

return _M
