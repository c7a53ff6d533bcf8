-- The four smartguide (支付即服务) endpoints: register, assign, query
-- and update store staff ("guides").  Guides live in state.lua.
--
-- Limits the platform documents and the sandbox enforces: userid and
-- sub_mchid up to 64 characters; qr_code, avatar and group_qrcode up
-- to 1024; encrypted fields up to 512 base64 characters, whose
-- plaintext is 1 to 64 bytes (name) or 1 to 32 bytes (mobile) of UTF-8
-- without 4-byte characters; out_trade_no 1 to 32 characters of
-- letters, digits, - _ | and *; limit 1 to 10.  The sandbox also
-- rejects an offset above MAX_OFFSET with 400 PARAM_ERROR, because it
-- adds the limit to the offset, which must not overflow.
-- NOTE: the corpid limit of 64 characters is a guess; older platform
-- documents give 32.
local core = require("wechatpay.core")
local util = require("wechatpay.sandbox.util")

local _M = {}

local MAX_CIPHERTEXT = 512
local MAX_NAME_BYTES = 64
local MAX_MOBILE_BYTES = 32
local MAX_LIMIT = 10
local MAX_OFFSET = math.maxinteger - MAX_LIMIT
local UNSIGNED_64_MESSAGE = "需要一个合法的 64 位无符号整数"

-- Returns a new guide ID: "LLA" and 31 letters or digits.
function _M.new_guide_id()
    return "LLA" .. util.random_alphanumeric(31)
end

local function body_pointer(name)
    return "/" .. name
end

-- Returns body[name] as a string of 1 to max_chars characters, or nil
-- when it is absent (or JSON null) and optional.
local function body_string(ctx, body, name, max_chars, required)
    local value = body[name]
    local pointer = body_pointer(name)
    if value == nil or value == core.null then
        if required then
            ctx:param_error("缺少必填参数" .. name .. " (the field " .. name
                .. " is required)", pointer, "body")
        end
        return nil
    end
    if type(value) ~= "string" then
        ctx:param_error(name .. "应为字符串 (the field " .. name .. " must be a JSON string)",
            pointer, "body")
    end
    if value == "" then
        ctx:param_error(name .. "不能为空 (the field " .. name .. " is an empty string)",
            pointer, "body")
    end
    local valid, problem = core.utf8_check(value)
    if not valid then
        ctx:param_error(name .. "包含不支持的字符 (" .. problem .. ")", pointer, "body")
    end
    local length = utf8.len(value)
    if length > max_chars then
        ctx:param_error(name .. "超出长度限制 (the field " .. name .. " has " .. length
            .. " characters; at most " .. max_chars .. " are allowed)", pointer, "body")
    end
    return value
end

-- Returns the store_id field, which must be a JSON integer.
local function body_store_id(ctx, body)
    local value = body.store_id
    if value == nil or value == core.null then
        ctx:param_error("缺少必填参数store_id (the field store_id is required)", "/store_id",
            "body")
    end
    if math.type(value) ~= "integer" or value < 0 then
        ctx:param_error("store_id: " .. UNSIGNED_64_MESSAGE .. " (got a JSON "
            .. (type(value) == "number" and "non-integer number" or type(value)) .. ")",
            "/store_id", "body")
    end
    return value
end

-- Returns the query parameter name as an integer from low to high, or
-- default when it is absent (a missing parameter without a default is
-- an error).
local function query_integer(ctx, params, name, low, high, default)
    local text = params[name]
    if text == nil then
        if default == nil then
            ctx:param_error("缺少必填参数" .. name .. " (the query parameter " .. name
                .. " is required)", name, "query")
        end
        return default
    end
    local value = text:match("^%d+$") and math.tointeger(tonumber(text))
    if not value then
        ctx:param_error(name .. ": " .. UNSIGNED_64_MESSAGE .. " (got \""
            .. util.printable(text) .. "\")", name, "query")
    end
    if value < low or value > high then
        ctx:param_error(name .. "超出取值范围 (" .. value .. " is outside " .. low .. " to "
            .. high .. ")", name, "query")
    end
    return value
end

-- Decrypts a sensitive field and checks its plaintext size and text.
local function decrypt_text(ctx, key, ciphertext, field, location, max_bytes)
    if #ciphertext > MAX_CIPHERTEXT then
        ctx:param_error(field .. "密文过长 (at most " .. MAX_CIPHERTEXT
            .. " base64 characters)", field, location)
    end
    local plaintext = ctx:decrypt_field(key, ciphertext, field, location)
    if #plaintext == 0 or #plaintext > max_bytes then
        ctx:param_error(field .. "解密后长度无效 (the plaintext has " .. #plaintext
            .. " bytes; it must have 1 to " .. max_bytes .. ")", field, location)
    end
    local ok, problem = core.utf8_check(plaintext)
    if not ok then
        ctx:param_error(field .. "包含不支持的字符 (" .. problem .. ")", field, location)
    end
    return plaintext
end

local function scope_of(ctx, body)
    return body_string(ctx, body, "sub_mchid", 64, false) or ""
end

-- Returns the guide that the path names within the scope, or raises
-- 404 RESOURCE_NOT_EXISTS.
local function path_guide(ctx, raw_id, scope)
    local guide_id = util.percent_decode(raw_id)
    local guide = guide_id and ctx.platform.state:find_guide(guide_id)
    if not guide or guide.scope ~= scope then
        ctx:fail(404, "RESOURCE_NOT_EXISTS", "服务人员不存在 (no guide "
            .. util.printable(guide_id or raw_id)
            .. (scope ~= "" and (" for sub_mchid " .. scope) or "") .. ")")
    end
    return guide
end

-- POST /v3/smartguide/guides
local function register_guide(ctx)
    local body = ctx:json_object()
    local scope = scope_of(ctx, body)
    local corpid = body_string(ctx, body, "corpid", 64, true)
    local store_id = body_store_id(ctx, body)
    local userid = body_string(ctx, body, "userid", 64, true)
    local name_ciphertext = body_string(ctx, body, "name", MAX_CIPHERTEXT, true)
    local mobile_ciphertext = body_string(ctx, body, "mobile", MAX_CIPHERTEXT, true)
    local qr_code = body_string(ctx, body, "qr_code", 1024, true)
    local avatar = body_string(ctx, body, "avatar", 1024, true)
    local group_qrcode = body_string(ctx, body, "group_qrcode", 1024, false)

    local key = ctx:platform_key()
    local name = decrypt_text(ctx, key, name_ciphertext, "/name", "body", MAX_NAME_BYTES)
    local mobile = decrypt_text(ctx, key, mobile_ciphertext, "/mobile", "body",
        MAX_MOBILE_BYTES)

    local state = ctx.platform.state
    if not state:has_store(store_id) then
        ctx:param_error("门店id不存在", "/store_id", "body")
    end
    local same = state:select_guides(store_id, scope, function(guide)
        return guide.userid == userid
    end)
    if #same > 0 then
        ctx:param_error("服务人员已存在 (userid " .. userid .. " is already registered in store "
            .. store_id .. " as " .. same[1].guide_id .. ")", "/userid", "body")
    end

    local guide = {
        guide_id = _M.new_guide_id(),
        store_id = store_id,
        scope = scope,
        corpid = corpid,
        userid = userid,
        name = name,
        mobile = mobile,
        qr_code = qr_code,
        avatar = avatar,
        group_qrcode = group_qrcode,
    }
    state:add_guide(guide)
    return 200, { guide_id = guide.guide_id }
end

-- POST /v3/smartguide/guides/{guide_id}/assign
local function assign_guide(ctx)
    local body = ctx:json_object()
    if body.guide_id ~= nil then
        ctx:param_error("无法将输入源\"/body/guide_id\"映射到目标字段\"guide_id\"中，"
            .. "此字段已经被输入源\"/uri_template/guide_id\"映射过了 (send guide_id only in"
            .. " the path)", "/guide_id", "body")
    end
    local scope = scope_of(ctx, body)
    local out_trade_no = body_string(ctx, body, "out_trade_no", 32, true)
    if not out_trade_no:match("^[%w%-_|*]+$") then
        ctx:param_error("商户订单号格式错误 (out_trade_no may contain only letters, digits,"
            .. " - _ | and *)", "/out_trade_no", "body")
    end
    local guide = path_guide(ctx, ctx.params[1], scope)
    ctx.platform.state:assign(guide.guide_id, out_trade_no, scope)
    return 204
end

-- Returns the query response entry of a guide, with name and mobile
-- encrypted for the merchant (RSA-OAEP under its API certificate).
local function public_guide(guide, merchant_key)
    return {
        guide_id = guide.guide_id,
        store_id = guide.store_id,
        name = assert(merchant_key:encrypt(guide.name)),
        mobile = assert(merchant_key:encrypt(guide.mobile)),
        userid = guide.userid,
        work_id = guide.work_id,
    }
end

-- GET /v3/smartguide/guides?store_id=..
local function query_guides(ctx)
    local params = ctx:query_params()
    local store_id = query_integer(ctx, params, "store_id", 0, math.maxinteger, nil)
    local limit = query_integer(ctx, params, "limit", 1, MAX_LIMIT, MAX_LIMIT)
    local offset = query_integer(ctx, params, "offset", 0, MAX_OFFSET, 0)
    local scope = params.sub_mchid or ""
    local userid = params.userid
    local work_id = params.work_id
    local mobile
    if params.mobile then
        mobile = decrypt_text(ctx, ctx:platform_key(), params.mobile, "mobile", "query",
            MAX_MOBILE_BYTES)
    end

    local state = ctx.platform.state
    if not state:has_store(store_id) then
        ctx:param_error("门店id不存在", "store_id", "query")
    end
    local found = state:select_guides(store_id, scope, function(guide)
        return (userid == nil or guide.userid == userid)
            and (work_id == nil or guide.work_id == work_id)
            and (mobile == nil or guide.mobile == mobile)
    end)

    local merchant_key = ctx.platform.keys.merchant.public_key
    local data = {}
    for i = offset + 1, math.min(#found, offset + limit) do
        data[#data + 1] = public_guide(found[i], merchant_key)
    end
    return 200, {
        total_count = #found,
        limit = limit,
        offset = offset,
        data = #data > 0 and data or core.empty_array,
    }
end

-- PATCH /v3/smartguide/guides/{guide_id}
local function update_guide(ctx)
    local body = ctx:json_object()
    local scope = scope_of(ctx, body)
    local guide = path_guide(ctx, ctx.params[1], scope)
    local name_ciphertext = body_string(ctx, body, "name", MAX_CIPHERTEXT, false)
    local mobile_ciphertext = body_string(ctx, body, "mobile", MAX_CIPHERTEXT, false)
    local changes = {
        qr_code = body_string(ctx, body, "qr_code", 1024, false),
        avatar = body_string(ctx, body, "avatar", 1024, false),
        group_qrcode = body_string(ctx, body, "group_qrcode", 1024, false),
    }
    if name_ciphertext or mobile_ciphertext then
        local key = ctx:platform_key()
        if name_ciphertext then
            changes.name = decrypt_text(ctx, key, name_ciphertext, "/name", "body",
                MAX_NAME_BYTES)
        end
        if mobile_ciphertext then
            changes.mobile = decrypt_text(ctx, key, mobile_ciphertext, "/mobile", "body",
                MAX_MOBILE_BYTES)
        end
    end
    for field, value in pairs(changes) do
        guide[field] = value
    end
    return 204
end

-- Adds the endpoints to a platform (platform.lua).
function _M.install(platform)
    platform:add_route("POST", "/v3/smartguide/guides", register_guide)
    platform:add_route("GET", "/v3/smartguide/guides", query_guides)
    platform:add_route("PATCH", "/v3/smartguide/guides/([^/]+)", update_guide)
    platform:add_route("POST", "/v3/smartguide/guides/([^/]+)/assign", assign_guide)
end

return _M
