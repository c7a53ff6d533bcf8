-- The emulated platform's handling of /v3/ requests: header checks,
-- the WECHATPAY2-SHA256-RSA2048 Authorization check, routing, and the
-- signed response.  Endpoints register themselves with add_route (see
-- smartguide.lua and certificates.lua), and faults (faults.lua) change
-- responses at fixed stages of handle().
local core = require("wechatpay.core")
local util = require("wechatpay.sandbox.util")

local _M = {}
local mt = { __index = _M }

local SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
local AUTHORIZATION_FIELDS = { "mchid", "nonce_str", "timestamp", "serial_no", "signature" }
-- Requests whose timestamp is further than this from the sandbox clock
-- are rejected, in seconds.
local TIMESTAMP_WINDOW = 300
local MAX_NONCE_LENGTH = 64

-- An error that handlers raise with ctx:fail and handle() turns into
-- the platform's error response.
local api_error_mt = {}

local function new_api_error(status, code, message, detail)
    return setmetatable({ status = status, code = code, message = message, detail = detail },
        api_error_mt)
end

-- Creates the platform.  opts: keys (keys.lua), state (state.lua),
-- faults (faults.lua), mchid and log_error(message).
function _M.new(opts)
    return setmetatable({
        keys = opts.keys,
        state = opts.state,
        faults = opts.faults,
        mchid = opts.mchid,
        log_error = opts.log_error or function() end,
        routes = {},
    }, mt)
end

-- Adds an endpoint.  pattern is matched against the whole raw path
-- (without the query), and its captures become ctx.params (a pattern
-- without captures gives the whole path as ctx.params[1]).
-- handler(ctx) returns status, body (a table to send as JSON, or nil
-- for no body) and optionally an array of extra { name, value } headers.
function _M:add_route(method, pattern, handler)
    self.routes[#self.routes + 1] = { method = method, pattern = "^" .. pattern .. "$",
        handler = handler }
end

-- Returns the route for the request and its captures, or nil and the
-- methods allowed on the path (empty when no route has the path).
function _M:find_route(method, path)
    local allowed = {}
    for _, route in ipairs(self.routes) do
        local captures = { path:match(route.pattern) }
        if captures[1] then
            if route.method == method then
                return route, captures
            end
            allowed[#allowed + 1] = route.method
        end
    end
    return nil, allowed
end

-- {====================================================================
-- The request context that handlers receive
-- =====================================================================

local Context = {}
Context.__index = Context

-- Raises an API error, which handle() turns into a response with status
-- and the body { code, message, detail }.
function Context:fail(status, code, message, detail)
    error(new_api_error(status, code, message, detail), 0)
end

-- Raises 400 PARAM_ERROR naming the field and where it was (body,
-- query or path).  Body fields are named by JSON pointer.
function Context:param_error(message, field, location)
    local detail
    if field then
        detail = { field = field, location = location }
    end
    self:fail(400, "PARAM_ERROR", message, detail)
end

-- Returns the request body decoded as a JSON object.
function Context:json_object()
    if self.json then
        return self.json
    end
    local body = self.request.body
    if body == "" then
        self:param_error("请求体为空，需要一个JSON对象 (the request body is empty; expected a"
            .. " JSON object)")
    end
    local value, err = core.json_decode(body)
    if value == nil then
        self:param_error("请求体不是合法的JSON (invalid JSON in the request body: "
            .. tostring(err) .. ")")
    end
    if type(value) ~= "table" or value[1] ~= nil or value == core.empty_array then
        self:param_error("请求体应为JSON对象 (the request body must be a JSON object)")
    end
    self.json = value
    return value
end

-- Returns the query parameters, percent-decoded (%XX only; '+' stays).
-- A repeated name keeps its last value.
function Context:query_params()
    if self.query then
        return self.query
    end
    local params = {}
    for pair in (self.request.query or ""):gmatch("[^&]+") do
        local raw_name, raw_value = pair:match("^([^=]*)=?(.*)$")
        local name, name_err = util.percent_decode(raw_name)
        local value, value_err = util.percent_decode(raw_value)
        if not name or not value then
            self:param_error("查询参数编码错误 (" .. (name_err or value_err) .. ")",
                util.printable(raw_name), "query")
        end
        params[name] = value
    end
    self.query = params
    return params
end

-- Returns the platform key named by the Wechatpay-Serial header: the
-- entry { serial, key, public_key } used to decrypt sensitive fields.
-- Raises 400 PARAM_ERROR when the header is absent or names no key that
-- this mode offers.
function Context:platform_key()
    local keys = self.platform.keys
    local serial = self.request.headers["wechatpay-serial"]
    local offered = {}
    if keys:uses_certificates() then
        local serials = {}
        for i, entry in ipairs(keys.platform_certificates) do
            serials[i] = entry.serial
        end
        offered[#offered + 1] = "a platform certificate serial ("
            .. table.concat(serials, ", ") .. ")"
    end
    if keys:uses_public_key() then
        offered[#offered + 1] = "the public key ID " .. keys.wechatpay_public_key.id
    end
    local expected = table.concat(offered, " or ")
    if not serial or serial == "" then
        self:param_error("请求头缺少Wechatpay-Serial (the request carries encrypted fields,"
            .. " so Wechatpay-Serial must name the encrypting key: " .. expected .. ")",
            "Wechatpay-Serial", "header")
    end
    local entry = keys:find_platform_key(serial)
    if not entry then
        self:param_error("Wechatpay-Serial无效 (" .. util.printable(serial)
            .. " names no key of this merchant; expected " .. expected .. ")",
            "Wechatpay-Serial", "header")
    end
    return entry
end

-- Decrypts an RSA-OAEP field with the platform key entry and checks the
-- plaintext: 1 to max_bytes bytes of UTF-8 without 4-byte characters.
function Context:decrypt_field(entry, ciphertext, field, location)
    local plaintext, err = entry.key:decrypt(ciphertext)
    if not plaintext then
        self:fail(400, "PARAM_ERROR", "平台私钥解密失败", {
            field = field,
            location = location,
            issue = "cannot decrypt with the key " .. entry.serial .. ": " .. tostring(err)
                .. "; encrypt with RSA-OAEP (SHA-1) under the key that Wechatpay-Serial names",
        })
    end
    return plaintext
end

-- }====================================================================

-- Parses the Authorization header value.  Returns its fields, or nil
-- and what is wrong.
local function parse_authorization(value)
    local scheme, params = value:match("^(%S+) +(.*)$")
    if scheme ~= SIGNATURE_TYPE then
        return nil, "the scheme must be " .. SIGNATURE_TYPE .. " followed by a space"
    end
    local fields = {}
    local position = 1
    while position <= #params do
        local name, field_value, after = params:match('^[ \t]*([%w_]+)="([^"]*)"[ \t]*()',
            position)
        if not name then
            return nil, "malformed parameter list at byte " .. position
                .. ' (expected name="value" pairs separated by commas)'
        end
        if fields[name] then
            return nil, "the parameter " .. name .. " appears twice"
        end
        fields[name] = field_value
        position = after
        if position <= #params then
            if params:sub(position, position) ~= "," then
                return nil, "expected a comma at byte " .. position
            end
            position = position + 1
        end
    end
    for _, name in ipairs(AUTHORIZATION_FIELDS) do
        if not fields[name] or fields[name] == "" then
            return nil, "the parameter " .. name .. " is missing or empty"
        end
    end
    return fields
end

local function sign_error(message, detail)
    return new_api_error(401, "SIGN_ERROR", message, detail)
end

-- Checks the Authorization header as the platform does.  Returns the
-- parsed fields, or nil and an API error.  The fields come back in both
-- cases when the header parsed, for the request log.
function _M:check_authorization(request, now)
    local header = request.headers["authorization"]
    if not header or header == "" then
        return nil, sign_error("请求头缺少Authorization (the Authorization header is missing)")
    end
    local fields, problem = parse_authorization(header)
    if not fields then
        return nil, sign_error("Authorization格式错误 (" .. problem .. ")")
    end
    if fields.mchid ~= self.mchid then
        return fields, new_api_error(400, "MCH_NOT_EXISTS", "商户号不存在 (mchid "
            .. util.printable(fields.mchid) .. " is not the sandbox merchant " .. self.mchid
            .. ")")
    end
    local merchant = self.keys.merchant
    if fields.serial_no:upper() ~= merchant.serial then
        return fields, sign_error("商户证书序列号有误 (serial_no "
            .. util.printable(fields.serial_no) .. " is not the merchant API certificate serial "
            .. merchant.serial .. ")")
    end

    local timestamp = fields.timestamp:match("^%d+$") and #fields.timestamp <= 12
        and math.tointeger(tonumber(fields.timestamp))
    if not timestamp then
        return fields, sign_error("timestamp无效 (timestamp must be Unix seconds in decimal"
            .. " digits)")
    end
    if math.abs(timestamp - now) > TIMESTAMP_WINDOW then
        local hint = #fields.timestamp >= 13 and "; it looks like milliseconds" or ""
        return fields, sign_error("请求时间戳已过期 (timestamp " .. timestamp .. " is "
            .. (timestamp - now) .. " s from the platform clock " .. now .. "; at most "
            .. TIMESTAMP_WINDOW .. " s are allowed" .. hint .. ")")
    end
    if #fields.nonce_str > MAX_NONCE_LENGTH then
        return fields, sign_error("nonce_str过长 (at most " .. MAX_NONCE_LENGTH
            .. " characters)")
    end
    if self.state:nonce_seen(fields.nonce_str) then
        return fields, sign_error("重复的请求 (nonce_str " .. util.printable(fields.nonce_str)
            .. " was already used within the last " .. TIMESTAMP_WINDOW .. " s)")
    end

    local message = core.request_message(request.method, request.target, timestamp,
        fields.nonce_str, request.body)
    local valid, why = merchant.public_key:verify(message, fields.signature)
    if not valid then
        return fields, sign_error("签名验证失败 (the signature does not verify with the"
            .. " merchant API certificate " .. merchant.serial .. ": " .. tostring(why) .. ")",
            { signed_message = util.printable(message) })
    end
    self.state:remember_nonce(fields.nonce_str)
    return fields
end

-- Returns the media type of a Content-Type value, without parameters.
local function media_type(content_type)
    return (content_type or ""):match("^[ \t]*([^; \t]*)")
end

-- Runs the checks that come before the handler and the handler itself.
-- Returns status, body table or nil, extra headers, and the parsed
-- Authorization fields (or nil).
function _M:process(request, now)
    local headers = request.headers
    if not headers["accept"] or not headers["user-agent"] then
        return 400, { code = "INVALID_REQUEST", message = "Http头缺少Accept或User-Agent" }
    end
    local method = request.method
    if method == "POST" or method == "PATCH" or method == "PUT" then
        local content_type = media_type(headers["content-type"])
        if not content_type or content_type:lower() ~= "application/json" then
            return 400, { code = "INVALID_REQUEST", message = "Content-Type必须为application/json"
                .. " (got " .. util.printable(headers["content-type"] or "no Content-Type")
                .. ")" }
        end
    end

    local route, captures = self:find_route(method, request.path)
    if not route then
        if #captures == 0 then
            return 404, { code = "NOT_FOUND", message = "请求的接口不存在 (no API at "
                .. util.printable(request.path) .. ")" }
        end
        return 405, { code = "METHOD_NOT_ALLOWED", message = "不支持的请求方法 ("
            .. util.printable(method) .. " is not allowed here; use "
            .. table.concat(captures, ", ") .. ")" },
            { { "Allow", table.concat(captures, ", ") } }
    end

    local fields, failure = self:check_authorization(request, now)
    if failure then
        return failure.status, { code = failure.code, message = failure.message,
            detail = failure.detail }, nil, fields
    end

    local ctx = setmetatable({ request = request, params = captures, platform = self,
        now = now }, Context)
    local ok, status, body, extra = pcall(route.handler, ctx)
    if not ok then
        if getmetatable(status) ~= api_error_mt then
            self.log_error("handler for " .. method .. " " .. util.printable(request.path)
                .. " failed: " .. tostring(status))
            return 500, { code = "SYSTEM_ERROR", message = "系统错误 (the sandbox failed to"
                .. " handle the request; see its log)" }, nil, fields
        end
        local failed = status
        return failed.status, { code = failed.code, message = failed.message,
            detail = failed.detail }, nil, fields
    end
    return status, body, extra, fields
end

-- Returns the request as the request log shows it: no Authorization
-- header, and its fields without the signature.
local function log_entry(request, status, fields, fault_names, request_id)
    local headers = {}
    for name, value in pairs(request.headers) do
        if name ~= "authorization" then
            headers[name] = util.printable(value)
        end
    end
    local entry = {
        method = request.method,
        target = util.printable(request.target),
        headers = headers,
        status = status,
        request_id = request_id,
        time = os.time(),
    }
    if fields then
        entry.authorization = {
            mchid = util.printable(fields.mchid or ""),
            nonce_str = util.printable(fields.nonce_str or ""),
            timestamp = util.printable(fields.timestamp or ""),
            serial_no = util.printable(fields.serial_no or ""),
        }
    end
    if util.printable(request.body) == request.body then
        entry.body = request.body
    else
        entry.body_base64 = util.base64_encode(request.body)
    end
    if #fault_names > 0 then
        entry.faults = fault_names
    end
    return entry
end

local function new_request_id()
    return core.nonce() .. "-0"
end

-- Encodes a response body table.  Returns the text, or nil and a
-- message when the table cannot be encoded (a sandbox bug).
local function encode_body(body_table)
    if body_table == nil then
        return ""
    end
    return core.json_encode(body_table)
end

local function apply_stage(faults, stage, draft, platform)
    for _, fault in ipairs(faults) do
        if fault.kind.stage == stage then
            fault.kind.apply(fault, draft, platform)
        end
    end
end

-- Builds the final headers of a signed response from the draft.
local function signed_headers(draft)
    local headers, add = util.header_list(draft.omit)
    if draft.body ~= "" then
        add("Content-Type", draft.content_type or "application/json")
    end
    add("Request-ID", draft.request_id)
    add("Wechatpay-Nonce", draft.nonce)
    add("Wechatpay-Signature", draft.signature)
    add("Wechatpay-Timestamp", tostring(draft.timestamp))
    add("Wechatpay-Serial", draft.serial)
    add("Wechatpay-Signature-Type", SIGNATURE_TYPE)
    for _, header in ipairs(draft.extra_headers or {}) do
        add(header[1], header[2])
    end
    return headers
end

-- Handles one /v3/ request and returns the response for http_server.
-- Faults run in stages: "request" before any checks (delay, status,
-- reset, hang), "body" after the handler (replacing the body), "signing"
-- before the signature is made, "headers" after it.
function _M:handle(request)
    local faults = self.faults:take(request.method, request.path)
    local fault_names = {}
    for i, fault in ipairs(faults) do
        fault_names[i] = fault.name
    end
    local now = self.state:now()
    local draft = { request = request, request_id = new_request_id() }

    apply_stage(faults, "request", draft, self)
    if draft.action then
        self.state:log_request(log_entry(request, 0, nil, fault_names, draft.request_id))
        return { action = draft.action, status = 0 }
    end

    local fields
    if not draft.status then
        local body_table
        draft.status, body_table, draft.extra_headers, fields = self:process(request, now)
        local err
        draft.body, err = encode_body(body_table)
        if not draft.body then
            draft.status = 500
            draft.extra_headers = nil
            draft.body = assert(core.json_encode({ code = "SYSTEM_ERROR",
                message = "sandbox bug: cannot encode the response: " .. util.printable(err) }))
        end
    end
    apply_stage(faults, "body", draft, self)

    draft.timestamp = now
    draft.nonce = core.nonce()
    draft.serial, draft.key = self.keys:response_signer(request.headers["wechatpay-serial"])
    apply_stage(faults, "signing", draft, self)
    draft.signature = draft.key:sign(core.response_message(tostring(draft.timestamp),
        draft.nonce, draft.body))
    apply_stage(faults, "headers", draft, self)

    self.state:log_request(log_entry(request, draft.status, fields, fault_names,
        draft.request_id))
    return {
        status = draft.status,
        headers = signed_headers(draft),
        body = draft.body,
        action = draft.action,
        declared_length = draft.declared_length,
    }
end

return _M
