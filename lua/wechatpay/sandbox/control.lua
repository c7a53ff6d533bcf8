-- The control API under /sandbox/: unsigned JSON endpoints with which
-- tests and developers inspect and steer the sandbox.  The server
-- listens on loopback only, so only local processes reach it.
--
--   GET    /sandbox/health        {"ok": true}
--   POST   /sandbox/reset         clear staff, assignments, faults, the
--                                 request log, recent nonces and the
--                                 clock skew; restore the initial stores
--                                 and the first platform certificate
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
--
-- Platform certificate rotation, in certificate and both mode.  In
-- public_key mode the list is empty and the other endpoints return 409.
--   GET    /sandbox/certificates  [{serial, not_before, not_after,
--                                 signing}] in the order /v3/certificates
--                                 lists them
--   POST   /sandbox/certificates  {"not_before"?, "not_after"?} (Unix
--                                 seconds; default now - 60 and now + 5
--                                 years) publishes a new certificate that
--                                 does not sign yet
--   POST   /sandbox/certificates/sign
--                                 {"serial"} signs responses with it
--   DELETE /sandbox/certificates/SERIAL
--                                 withdraws it; 400 while it signs
--
-- Callbacks, sent only to http URLs on loopback:
--   POST   /sandbox/notify        {"url", "resource", "event_type"?,
--                                 "original_type"?, "summary"?,
--                                 "associated_data"?, "sign_with"?,
--                                 "fault"?, "header"?, "skew"?} sends one
--                                 and returns {status, response_body,
--                                 error?, sent: {headers, body}} (see
--                                 notify.lua)
local core = require("wechatpay.core")
local keys_module = require("wechatpay.sandbox.keys")
local notify = require("wechatpay.sandbox.notify")
local smartguide = require("wechatpay.sandbox.smartguide")
local util = require("wechatpay.sandbox.util")

local _M = {}
local mt = { __index = _M }

-- The clock may move by up to ten years either way.
local MAX_SKEW = 10 * 365 * 86400
-- A new certificate starts this many seconds before the sandbox clock
-- unless the request sets not_before.
local CERTIFICATE_BACKDATE = 60

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

-- Creates the control API.  opts: state, faults, keys, and log(line)
-- for one line per callback sent (default: no lines).
function _M.new(opts)
    local self = setmetatable({ state = opts.state, faults = opts.faults, keys = opts.keys,
        log = opts.log or function() end }, mt)
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
        ["GET /sandbox/certificates"] = self.list_certificates,
        ["POST /sandbox/certificates"] = self.publish_certificate,
        ["POST /sandbox/certificates/sign"] = self.sign_with_certificate,
        ["POST /sandbox/notify"] = self.send_notification,
    }
    -- Routes whose path has a parameter: the pattern's capture becomes
    -- the handler's second argument.
    self.pattern_routes = {
        { method = "DELETE", pattern = "^/sandbox/certificates/([^/]+)$",
          handler = self.withdraw_certificate },
    }
    return self
end

function _M:health()
    return json_response(200, { ok = true })
end

function _M:reset()
    self.state:reset()
    self.faults:clear()
    self.keys:reset_platform_certificates()
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

-- {====================================================================
-- Platform certificate rotation
-- =====================================================================

-- Returns an error response in public_key mode, which publishes no
-- platform certificates, and nil otherwise.
function _M:certificate_mode_failure()
    if self.keys:uses_certificates() then
        return nil
    end
    return error_response(409, "INVALID_MODE", "the sandbox runs in public_key mode, which"
        .. " has no platform certificates; start it with --mode certificate or --mode both")
end

function _M:describe_certificate(entry)
    return {
        serial = entry.serial,
        not_before = entry.not_before,
        not_after = entry.not_after,
        signing = entry == self.keys.signing_certificate,
    }
end

-- Returns the published certificate that serial names (in any case), or
-- nil and a 404 response.
function _M:published_certificate(serial)
    local entry = self.keys:find_platform_certificate(serial:upper())
    if not entry then
        return nil, error_response(404, "NOT_FOUND", "no published platform certificate has"
            .. " the serial " .. util.printable(serial) .. "; GET /sandbox/certificates lists"
            .. " them")
    end
    return entry
end

function _M:list_certificates()
    local entries = {}
    if self.keys:uses_certificates() then
        for i, entry in ipairs(self.keys.platform_certificates) do
            entries[i] = self:describe_certificate(entry)
        end
    end
    return json_response(200, list(entries))
end

-- Reads not_before and not_after (Unix seconds) with their defaults.
-- Returns both, or nil and a message.
local function validity_period(body, now)
    local not_before = body.not_before
    local not_after = body.not_after
    if not_before == nil then
        not_before = now - CERTIFICATE_BACKDATE
    end
    if not_after == nil then
        not_after = now + keys_module.CERTIFICATE_LIFETIME
    end
    local max = keys_module.MAX_CERTIFICATE_TIME
    for _, field in ipairs({ { "not_before", not_before }, { "not_after", not_after } }) do
        local value = field[2]
        if math.type(value) ~= "integer" or value < 0 or value > max then
            return nil, field[1] .. " must be an integer number of Unix seconds from 0 to "
                .. max
        end
    end
    if not_before >= not_after then
        return nil, "not_before (" .. not_before .. ") must be earlier than not_after ("
            .. not_after .. ")"
    end
    return not_before, not_after
end

function _M:publish_certificate(request)
    local failure = self:certificate_mode_failure()
    if failure then
        return failure
    end
    local body
    body, failure = json_object(request)
    if not body then
        return failure
    end
    local not_before, not_after = validity_period(body, self.state:now())
    if not not_before then
        return error_response(400, "PARAM_ERROR", not_after)
    end
    local entry = self.keys:publish_platform_certificate(not_before, not_after)
    return json_response(200, { serial = entry.serial, not_before = entry.not_before,
        not_after = entry.not_after })
end

function _M:sign_with_certificate(request)
    local failure = self:certificate_mode_failure()
    if failure then
        return failure
    end
    local body
    body, failure = json_object(request)
    if not body then
        return failure
    end
    if type(body.serial) ~= "string" or body.serial == "" then
        return error_response(400, "PARAM_ERROR", "serial must name a published platform"
            .. " certificate")
    end
    local entry
    entry, failure = self:published_certificate(body.serial)
    if not entry then
        return failure
    end
    self.keys.signing_certificate = entry
    return json_response(200, self:describe_certificate(entry))
end

function _M:withdraw_certificate(_, serial)
    local failure = self:certificate_mode_failure()
    if failure then
        return failure
    end
    local entry
    entry, failure = self:published_certificate(serial)
    if not entry then
        return failure
    end
    if entry == self.keys.signing_certificate then
        return error_response(400, "PARAM_ERROR", "the certificate " .. entry.serial
            .. " signs responses and cannot be withdrawn; sign with another one first"
            .. " (POST /sandbox/certificates/sign)")
    end
    self.keys:withdraw_platform_certificate(entry.serial)
    return json_response(200, { ok = true, serial = entry.serial })
end

-- }====================================================================

-- Builds a callback, sends it and returns what was sent and what came
-- back.  The send waits on a cqueues socket, so other connections are
-- served meanwhile.
function _M:send_notification(request)
    local body, failure = json_object(request)
    if not body then
        return failure
    end
    local callback_request, err = notify.check(body, self.keys)
    if not callback_request then
        return error_response(400, "PARAM_ERROR", err)
    end
    local callback = notify.build(callback_request, self.keys, self.state:now())
    local result = notify.deliver(callback_request, callback)
    self.log("sandbox: callback " .. callback_request.event_type .. " to "
        .. callback_request.url_text .. ": "
        .. (result.error and ("not delivered: " .. result.error) or tostring(result.status)))
    return json_response(200, result)
end

-- Handles one /sandbox/ request and returns the response.
function _M:handle(request)
    local handler = self.routes[request.method .. " " .. request.path]
    if handler then
        return handler(self, request)
    end
    local path_exists = false
    for _, route in ipairs(self.pattern_routes) do
        local parameter = request.path:match(route.pattern)
        if parameter and route.method == request.method then
            return route.handler(self, request, parameter)
        end
        path_exists = path_exists or parameter ~= nil
    end
    for key in pairs(self.routes) do
        path_exists = path_exists or key:match("^%S+ (.*)$") == request.path
    end
    if path_exists then
        return error_response(405, "METHOD_NOT_ALLOWED", util.printable(request.method)
            .. " is not allowed on " .. util.printable(request.path))
    end
    return error_response(404, "NOT_FOUND", "no control endpoint at "
        .. util.printable(request.path)
        .. "; see the list in wechatpay/sandbox/control.lua")
end

return _M
