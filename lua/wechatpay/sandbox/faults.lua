-- Faults that the control API arms for the next matching /v3/
-- requests, or for the next new connections: error statuses, broken
-- signatures, missing headers, slow, hung, reset or truncated
-- connections, and bad bodies.
--
-- Each kind has a stage at which it applies.  A connection fault applies
-- when the http_server has just accepted a connection (see take_connection):
--   connection  before anything is read, so method and path are unknown.
-- platform.handle() applies the other stages to a /v3/ request:
--   request  before any check; the request is not processed further
--            when the fault replaces the response (status, reset, hang);
--   body     after the handler; replaces status and body;
--   signing  before the signature; changes the timestamp or the key;
--   headers  after the signature; changes what goes on the wire.
-- A new fault is a new entry in KINDS.
local core = require("wechatpay.core")
local cqueues = require("cqueues")
local util = require("wechatpay.sandbox.util")

local _M = {}
local mt = { __index = _M }

local MAX_COUNT = 1000000
local MAX_DELAY = 600
local MAX_OVERSIZE = 64 * 1024 * 1024
local TEN_YEARS = 10 * 365 * 86400

local WECHATPAY_HEADERS = {
    ["wechatpay-timestamp"] = true,
    ["wechatpay-nonce"] = true,
    ["wechatpay-signature"] = true,
    ["wechatpay-serial"] = true,
    ["wechatpay-signature-type"] = true,
}

-- Error codes that the status fault sends when the spec names none.
local DEFAULT_CODES = {
    [400] = "PARAM_ERROR", [401] = "SIGN_ERROR", [403] = "NO_AUTH",
    [404] = "RESOURCE_NOT_EXISTS", [429] = "RATELIMIT_EXCEEDED",
    [500] = "SYSTEM_ERROR", [502] = "SERVICE_UNAVAILABLE", [503] = "SERVICE_UNAVAILABLE",
}

-- Messages that the status fault sends when the spec names none.
local DEFAULT_MESSAGES = {
    PARAM_ERROR = "参数错误", SIGN_ERROR = "签名错误", NO_AUTH = "无权限",
    RESOURCE_NOT_EXISTS = "资源不存在", RATELIMIT_EXCEEDED = "请求频率超过限制",
    SYSTEM_ERROR = "系统错误，请稍后重试", SERVICE_UNAVAILABLE = "服务暂时不可用，请稍后重试",
}

-- Reads an optional integer field of a fault spec within [low, high].
-- Returns the value (or default), or nil and a message.
local function integer_field(spec, name, low, high, default)
    local value = spec[name]
    if value == nil then
        return default
    end
    if math.type(value) ~= "integer" or value < low or value > high then
        return nil, name .. " must be an integer from " .. low .. " to " .. high
    end
    return value
end

local function string_field(spec, name, default)
    local value = spec[name]
    if value == nil then
        return default
    end
    if type(value) ~= "string" then
        return nil, name .. " must be a string"
    end
    return value
end

local function encode_error(code, message, detail)
    return assert(core.json_encode({ code = code, message = message, detail = detail }))
end

local KINDS = {}

KINDS.status = {
    stage = "request",
    prepare = function(fault, spec)
        local err
        fault.status, err = integer_field(spec, "status", 400, 599, 500)
        if not fault.status then
            return nil, err
        end
        local default_code = DEFAULT_CODES[fault.status]
            or (fault.status < 500 and "PARAM_ERROR" or "SYSTEM_ERROR")
        fault.code, err = string_field(spec, "code", default_code)
        if not fault.code then
            return nil, err
        end
        fault.message, err = string_field(spec, "message",
            DEFAULT_MESSAGES[fault.code] or ("sandbox fault status " .. fault.status))
        if not fault.message then
            return nil, err
        end
        fault.retry_after, err = integer_field(spec, "retry_after", 0, 86400, nil)
        if err then
            return nil, err
        end
        if spec.detail ~= nil and type(spec.detail) ~= "table" then
            return nil, "detail must be a JSON object"
        end
        fault.detail = spec.detail
        return true
    end,
    apply = function(fault, draft)
        draft.status = fault.status
        draft.body = encode_error(fault.code, fault.message, fault.detail)
        if fault.retry_after then
            draft.extra_headers = { { "Retry-After", tostring(fault.retry_after) } }
        end
    end,
}

KINDS.delay = {
    stage = "request",
    prepare = function(fault, spec)
        local seconds = spec.seconds == nil and 1 or spec.seconds
        if type(seconds) ~= "number" or seconds <= 0 or seconds > MAX_DELAY then
            return nil, "seconds must be a number above 0 and at most " .. MAX_DELAY
        end
        fault.seconds = seconds
        return true
    end,
    -- Sleeps in this connection's coroutine; others are served meanwhile.
    apply = function(fault)
        cqueues.sleep(fault.seconds)
    end,
}

KINDS.hang = {
    stage = "request",
    apply = function(_, draft)
        draft.action = "hang"
    end,
}

-- NOTE: libcurl resends a request once when a reused keep-alive
-- connection closes without a response, so a keep-alive client sees a
-- count = 1 reset only as a retried request that succeeds.
KINDS.reset = {
    stage = "request",
    apply = function(_, draft)
        draft.action = "reset"
    end,
}

-- Closes a newly accepted connection before reading anything, so the
-- client sees its connection closed or reset with no response.  It hits
-- the next new connection whatever it is for (the control API too); a
-- kept-alive connection is not hit.  Under --tls the handshake fails.
-- NOTE: the close sends a FIN, not an RST, because cqueues cannot set
-- SO_LINGER; the peer gets an RST only once its request reaches the
-- closed socket.  libcurl reports both as a reset (CURLE_GOT_NOTHING or
-- CURLE_RECV_ERROR).
KINDS.reset_before_request = {
    stage = "connection",
    prepare = function(fault)
        if fault.method or fault.path then
            return nil, "reset_before_request takes no method or path: the"
                .. " connection closes before the request is read"
        end
        return true
    end,
}

KINDS.oversize = {
    stage = "body",
    prepare = function(fault, spec)
        local err
        fault.bytes, err = integer_field(spec, "bytes", 32, MAX_OVERSIZE, 2 * 1024 * 1024)
        if not fault.bytes then
            return nil, err
        end
        return true
    end,
    -- A JSON object of exactly fault.bytes bytes.
    apply = function(fault, draft)
        local prefix, suffix = '{"padding":"', '"}'
        draft.status = 200
        draft.body = prefix .. string.rep("x", fault.bytes - #prefix - #suffix) .. suffix
        draft.extra_headers = nil
    end,
}

KINDS.invalid_json = {
    stage = "body",
    prepare = function(fault, spec)
        local err
        fault.body, err = string_field(spec, "body",
            "<html><body>502 Bad Gateway (sandbox fault invalid_json)</body></html>")
        if not fault.body then
            return nil, err
        end
        return true
    end,
    apply = function(fault, draft)
        draft.status = 200
        draft.body = fault.body
        draft.extra_headers = nil
    end,
}

KINDS.empty_body = {
    stage = "body",
    apply = function(_, draft)
        draft.status = 200
        draft.body = ""
        draft.extra_headers = nil
    end,
}

KINDS.stale_timestamp = {
    stage = "signing",
    prepare = function(fault, spec)
        local err
        fault.skew, err = integer_field(spec, "skew", -TEN_YEARS, TEN_YEARS, -600)
        if not fault.skew then
            return nil, err
        end
        return true
    end,
    apply = function(fault, draft)
        draft.timestamp = draft.timestamp + fault.skew
    end,
}

KINDS.wrong_key = {
    stage = "signing",
    apply = function(_, draft, platform)
        draft.key = platform.keys:stray_key()
    end,
}

KINDS.bad_signature = {
    stage = "headers",
    -- A genuine signature by the right key, over different bytes.
    apply = function(_, draft)
        draft.signature = draft.key:sign("sandbox fault bad_signature " .. core.nonce())
    end,
}

KINDS.signtest = {
    stage = "headers",
    apply = function(_, draft)
        draft.signature = "WECHATPAY/SIGNTEST/" .. util.base64_encode(util.random_bytes(192))
    end,
}

KINDS.unknown_serial = {
    stage = "headers",
    apply = function(_, draft)
        if draft.serial:find("^PUB_KEY_ID_") then
            draft.serial = "PUB_KEY_ID_" .. util.random_digits(28)
        else
            draft.serial = util.random_serial(40)
        end
    end,
}

KINDS.missing_header = {
    stage = "headers",
    prepare = function(fault, spec)
        local header, err = string_field(spec, "header", "Wechatpay-Signature")
        if not header then
            return nil, err
        end
        if not WECHATPAY_HEADERS[header:lower()] then
            return nil, "header must be one of Wechatpay-Timestamp, Wechatpay-Nonce,"
                .. " Wechatpay-Signature, Wechatpay-Serial or Wechatpay-Signature-Type"
        end
        fault.header = header:lower()
        return true
    end,
    apply = function(fault, draft)
        draft.omit = draft.omit or {}
        draft.omit[fault.header] = true
    end,
}

KINDS.truncate = {
    stage = "headers",
    prepare = function(fault, spec)
        local err
        fault.missing_bytes, err = integer_field(spec, "missing_bytes", 1, 1024 * 1024, 64)
        if not fault.missing_bytes then
            return nil, err
        end
        return true
    end,
    -- Content-Length promises more than is sent; then the connection closes.
    apply = function(fault, draft)
        draft.action = "truncate"
        draft.declared_length = #draft.body + fault.missing_bytes
    end,
}

_M.KINDS = KINDS

local STAGE_ORDER = { connection = 0, request = 1, body = 2, signing = 3, headers = 4 }

function _M.new()
    return setmetatable({ armed = {}, next_id = 1 }, mt)
end

-- Arms a fault from a control API spec: { fault, method?, path?, count?,
-- ...fields of the kind }.  Returns the fault's public description, or
-- nil and a message.
function _M:add(spec)
    if type(spec) ~= "table" then
        return nil, "the body must be a JSON object"
    end
    local kind = KINDS[spec.fault]
    if not kind then
        local names = {}
        for name in pairs(KINDS) do
            names[#names + 1] = name
        end
        table.sort(names)
        return nil, "unknown fault " .. tostring(spec.fault) .. "; expected one of "
            .. table.concat(names, ", ")
    end
    local fault = { id = self.next_id, name = spec.fault, kind = kind }
    local err
    fault.method, err = string_field(spec, "method", nil)
    if err then
        return nil, err
    end
    fault.method = fault.method and fault.method:upper()
    fault.path, err = string_field(spec, "path", nil)
    if err then
        return nil, err
    end
    if fault.path and not pcall(string.find, "", fault.path) then
        return nil, "path is not a valid Lua pattern: " .. fault.path
    end
    fault.remaining, err = integer_field(spec, "count", 1, MAX_COUNT, 1)
    if not fault.remaining then
        return nil, err
    end
    if kind.prepare then
        local ok, problem = kind.prepare(fault, spec)
        if not ok then
            return nil, problem
        end
    end
    self.next_id = self.next_id + 1
    self.armed[#self.armed + 1] = fault
    return _M.describe(fault)
end

function _M:clear()
    self.armed = {}
end

-- Returns a fault as the control API shows it.
function _M.describe(fault)
    local public = { id = fault.id, fault = fault.name, remaining = fault.remaining,
        method = fault.method, path = fault.path }
    for key, value in pairs(fault) do
        if public[key] == nil and key ~= "kind" and key ~= "name" then
            public[key] = value
        end
    end
    return public
end

function _M:list()
    local list = {}
    for i, fault in ipairs(self.armed) do
        list[i] = _M.describe(fault)
    end
    return list
end

-- A path matches when it starts with the fault's path or when the
-- fault's path, read as a Lua pattern, matches somewhere in it.
local function matches(fault, method, path)
    if fault.kind.stage == "connection" then
        return false
    end
    if fault.method and fault.method ~= method then
        return false
    end
    local p = fault.path
    return p == nil or path:sub(1, #p) == p or path:find(p) ~= nil
end

-- Takes the faults that hit this request: the first armed fault of each
-- kind that matches.  Each loses one from its count and is disarmed at
-- zero.  Returns them in stage order.
function _M:take(method, path)
    if #self.armed == 0 then
        return {}
    end
    local hits = {}
    local seen = {}
    local kept = {}
    for _, fault in ipairs(self.armed) do
        if not seen[fault.name] and matches(fault, method, path) then
            seen[fault.name] = true
            hits[#hits + 1] = fault
            fault.remaining = fault.remaining - 1
        end
        if fault.remaining > 0 then
            kept[#kept + 1] = fault
        end
    end
    self.armed = kept
    table.sort(hits, function(a, b)
        return STAGE_ORDER[a.kind.stage] < STAGE_ORDER[b.kind.stage]
    end)
    return hits
end

-- Takes one use of the first armed connection fault, for a connection
-- just accepted, and disarms it at zero.  Returns the fault or nil.
function _M:take_connection()
    for i, fault in ipairs(self.armed) do
        if fault.kind.stage == "connection" then
            fault.remaining = fault.remaining - 1
            if fault.remaining == 0 then
                table.remove(self.armed, i)
            end
            return fault
        end
    end
    return nil
end

return _M
