-- The "Pay as a Service" (支付即服务) staff calls under /v3/smartguide:
-- register, assign, query and update service staff ("guides").
local compat = require("wechatpay.compat")
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")
local validate = require("wechatpay.validate")

local error = error
local getmetatable = getmetatable
local ipairs = ipairs
local math_type = compat.math_type
local next = next
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local type = type
local format = string.format
local core_null = core.null

local _M = {}

local GUIDES_PATH = "/v3/smartguide/guides"

-- The platform's limits (apiv3.md section 1): bytes for text; name and
-- mobile are limits of the plaintext before encryption.
local LIMITS = {
    corpid = 64, userid = 64, name = 64, mobile = 32, qr_code = 1024,
    avatar = 1024, group_qrcode = 1024, sub_mchid = 64, work_id = 64,
    guide_id = 64,
}

-- The largest page the query endpoint returns.
local PAGE_SIZE = 10

-- The fields a guide object carries at its top level; the whole result
-- item, whatever new fields the platform adds, is in guide.data.
local GUIDE_FIELDS = { "guide_id", "store_id", "userid", "work_id", "name", "mobile" }

local Guide = {}
Guide.__index = Guide

function Guide.__tostring(guide)
    return "wechatpay.Guide " .. tostring(guide.guide_id)
end

local function new_guide(client, fields)
    local guide = { client = client, data = fields }
    for _, name in ipairs(GUIDE_FIELDS) do
        guide[name] = fields[name]
    end
    return setmetatable(guide, Guide)
end

local function check_table(name, value, argn)
    if type(value) ~= "table" then
        error(format("bad argument #%d to '%s' (table expected, got %s)", argn, name,
            type(value)), 3)
    end
end

-- Checks an optional text field; returns the value (or nil) and an error.
local function optional_text(fields, name)
    if fields[name] == nil then
        return nil
    end
    return validate.text(name, fields[name], 1, LIMITS[name])
end

-- Collects and checks text fields into body; returns true or nil, err.
local function copy_texts(body, fields, names, required)
    for _, name in ipairs(names) do
        local value, err
        if required then
            if fields[name] == nil then
                return errors.input(name, "is required")
            end
            value, err = validate.text(name, fields[name], 1, LIMITS[name])
        else
            value, err = optional_text(fields, name)
        end
        if err then
            return nil, err
        end
        body[name] = value
    end
    return true
end

-- Encrypts name and mobile in body (when present) with the current
-- encryption key; returns the serial to send, or nil, err.
local function encrypt_fields(client, body, deadline)
    local serial, key = client:_encryption_key(deadline)
    if not serial then
        return nil, key
    end
    for _, name in ipairs({ "name", "mobile" }) do
        if body[name] then
            local cipher, why = key:encrypt(body[name])
            if not cipher then
                return errors.input(name, why)
            end
            body[name] = cipher
        end
    end
    return serial
end

local function sub_mchid(client, fields)
    if fields.sub_mchid ~= nil then
        return validate.text("sub_mchid", fields.sub_mchid, 1, LIMITS.sub_mchid)
    end
    return client.sub_mchid
end

local REGISTER_FIELDS = {
    corpid = true, store_id = true, userid = true, name = true, mobile = true,
    qr_code = true, avatar = true, group_qrcode = true, sub_mchid = true,
}

-- Registers a staff member.  Returns a guide object, or nil and an error.
function _M:register_guide(fields)
    check_table("register_guide", fields, 1)
    local ok, err = validate.known_fields("register_guide", fields, REGISTER_FIELDS)
    if not ok then
        return nil, err
    end

    local body = {}
    body.store_id, err = validate.integer("store_id", fields.store_id, 0)
    if err then
        return nil, err
    end
    ok, err = copy_texts(body, fields,
        { "corpid", "userid", "name", "mobile", "qr_code", "avatar" }, true)
    if ok then
        ok, err = copy_texts(body, fields, { "group_qrcode" }, false)
    end
    if ok then
        body.sub_mchid, err = sub_mchid(self, fields)
    end
    if err then
        return nil, err
    end

    local deadline = self:_deadline()
    local serial
    serial, err = encrypt_fields(self, body, deadline)
    if not serial then
        return nil, err
    end
    local res
    res, err = self:_call("POST", GUIDES_PATH, { body = body, serial = serial,
        deadline = deadline })
    if not res then
        return nil, err
    end
    if type(res.data) ~= "table" or type(res.data.guide_id) ~= "string" then
        return nil, errors.new("api", "registration response has no guide_id", {
            status = res.status, request_id = res.request_id,
        })
    end
    return new_guide(self, {
        guide_id = res.data.guide_id,
        store_id = body.store_id,
        userid = fields.userid,
    })
end

-- Checks a guide_id for a path: the platform's limits, and not "." or
-- "..", which a server could read as a step up the path.
local function check_guide_id(guide_id)
    local id, err = validate.text("guide_id", guide_id, 1, LIMITS.guide_id)
    if not id then
        return nil, err
    end
    if id:match("^%.%.?$") then
        return errors.input("guide_id", "must not be . or ..")
    end
    return id
end

-- Returns a guide object for a known guide_id, without a request, or nil
-- and an input error when the id is not one the platform could accept.
function _M:guide(guide_id)
    if type(guide_id) ~= "string" then
        error("bad argument #1 to 'guide' (string expected, got " .. type(guide_id) .. ")", 2)
    end
    local id, err = check_guide_id(guide_id)
    if not id then
        return nil, err
    end
    return new_guide(self, { guide_id = id })
end

local function guide_path(guide)
    return GUIDES_PATH .. "/" .. guide.client.percent_encode(guide.guide_id)
end

-- Assigns the guide to an order, which must happen before it is paid.
-- opts: sub_mchid.  Returns true, or nil and an error.
function Guide:assign(out_trade_no, opts)
    if type(out_trade_no) ~= "string" then
        error("bad argument #1 to 'assign' (string expected, got " .. type(out_trade_no)
            .. ")", 2)
    end
    if opts ~= nil then
        check_table("assign", opts, 2)
    end
    local body = {}
    local err
    body.out_trade_no, err = validate.out_trade_no("out_trade_no", out_trade_no)
    if not err then
        body.sub_mchid, err = sub_mchid(self.client, opts or {})
    end
    if err then
        return nil, err
    end

    local res
    -- Assigning the same order twice leaves the same result.
    res, err = self.client:_call("POST", guide_path(self) .. "/assign", {
        body = body, idempotent = true,
    })
    if not res then
        return nil, err
    end
    return true
end

local UPDATE_FIELDS = {
    name = true, mobile = true, qr_code = true, avatar = true, group_qrcode = true,
    sub_mchid = true,
}

-- Updates the fields given (name, mobile, qr_code, avatar, group_qrcode;
-- sub_mchid for a service provider).  Returns true, or nil and an error.
function Guide:update(fields)
    check_table("update", fields, 1)
    local client = self.client
    local ok, err = validate.known_fields("update", fields, UPDATE_FIELDS)
    if not ok then
        return nil, err
    end

    local body = {}
    ok, err = copy_texts(body, fields, { "name", "mobile", "qr_code", "avatar",
        "group_qrcode" }, false)
    if not ok then
        return nil, err
    end
    if next(body) == nil then
        return errors.input("fields", "nothing to update: give at least one of name, "
            .. "mobile, qr_code, avatar or group_qrcode")
    end
    body.sub_mchid, err = sub_mchid(client, fields)
    if err then
        return nil, err
    end

    local deadline = client:_deadline()
    local serial
    if body.name or body.mobile then
        serial, err = encrypt_fields(client, body, deadline)
        if not serial then
            return nil, err
        end
    end
    local res
    res, err = client:_call("PATCH", guide_path(self), { body = body, serial = serial,
        deadline = deadline })
    if not res then
        return nil, err
    end
    return true
end

local QUERY_FIELDS = {
    store_id = true, userid = true, mobile = true, work_id = true, limit = true,
    offset = true, sub_mchid = true,
}

-- Checks the query parameters; returns the query as ordered pairs (the
-- order of the platform's own example) and the encryption serial.
local function build_guide_query(client, params, deadline)
    local ok, err = validate.known_fields("query_guides", params, QUERY_FIELDS)
    if not ok then
        return nil, err
    end
    local v = {}
    v.store_id, err = validate.integer("store_id", params.store_id, 0)
    if not err and params.limit ~= nil then
        v.limit, err = validate.integer("limit", params.limit, 1, PAGE_SIZE)
    end
    if not err and params.offset ~= nil then
        v.offset, err = validate.integer("offset", params.offset, 0)
    end
    if not err then
        ok, err = copy_texts(v, params, { "userid", "mobile", "work_id" }, false)
    end
    if not err then
        v.sub_mchid, err = sub_mchid(client, params)
    end
    if err then
        return nil, err
    end

    local serial
    if v.mobile then
        serial, err = encrypt_fields(client, v, deadline)
        if not serial then
            return nil, err
        end
    end

    local query = {}
    for _, name in ipairs({ "sub_mchid", "store_id", "userid", "mobile", "work_id",
        "limit", "offset" }) do
        if v[name] ~= nil then
            query[#query + 1] = { name, v[name] }
        end
    end
    return query, serial
end

-- Decrypts name and mobile of one result item in place.
local function decrypt_item(client, item)
    for _, name in ipairs({ "name", "mobile" }) do
        if type(item[name]) == "string" and item[name] ~= "" then
            local plain, err = client:decrypt(item[name])
            if not plain then
                err.message = format("%s of guide %s: %s", name, tostring(item.guide_id),
                    err.message)
                return nil, err
            end
            item[name] = plain
        end
    end
    return true
end

local function optional_integer(value)
    return value == nil or math_type(value) == "integer"
end

-- Checks the shape of a decoded query response; returns { data,
-- total_count, limit, offset } or nil and what is wrong.
local function check_page(data)
    if type(data) ~= "table" or getmetatable(data) == core.array_mt then
        return nil, "is not a JSON object"
    end
    local items = data.data
    if items == nil or items == core_null then
        items = {}
    elseif type(items) ~= "table" or getmetatable(items) ~= core.array_mt then
        return nil, "has a data field that is not a list"
    end
    for i, item in ipairs(items) do
        if type(item) ~= "table" or type(item.guide_id) ~= "string" then
            return nil, format("item %d is not a guide with a guide_id", i)
        end
    end
    for _, name in ipairs({ "total_count", "limit", "offset" }) do
        if not optional_integer(data[name]) then
            return nil, format("has a %s that is not an integer", name)
        end
    end
    return { data = items, total_count = data.total_count, limit = data.limit,
        offset = data.offset }
end

-- Queries the staff of a store, one page (at most 10).  Returns
-- { data = { guide, ... }, total_count, limit, offset } with name and
-- mobile decrypted, or nil and an error.
function _M:query_guides(params)
    check_table("query_guides", params, 1)
    local deadline = self:_deadline()
    local query, serial = build_guide_query(self, params, deadline)
    if not query then
        return nil, serial
    end

    local res, err = self:_call("GET", GUIDES_PATH, { query = query, serial = serial,
        deadline = deadline })
    if not res then
        return nil, err
    end
    local page, why = check_page(res.data)
    if not page then
        return nil, errors.new("api", "query response " .. why, {
            status = res.status, request_id = res.request_id,
        })
    end

    local guides = {}
    for i, item in ipairs(page.data) do
        local ok, derr = decrypt_item(self, item)
        if not ok then
            derr.request_id = res.request_id
            return nil, derr
        end
        guides[i] = new_guide(self, item)
    end
    page.data = guides
    return page
end

-- Iterates over every guide of a store, a page of 10 at a time:
--   for guide, err in client:each_guide{ store_id = 1234 } do ... end
-- On a failure the loop receives false and the error once, then ends.
function _M:each_guide(params)
    check_table("each_guide", params, 1)
    local query = {}
    for k, v in pairs(params) do
        query[k] = v
    end
    query.limit = query.limit or PAGE_SIZE
    query.offset = query.offset or 0

    local page, index, done = nil, 0, false
    return function()
        if done then
            return nil
        end
        if page == nil or index >= #page.data then
            if page and (#page.data < query.limit
                or (page.total_count and query.offset >= page.total_count)) then
                done = true
                return nil
            end
            local err
            page, err = self:query_guides(query)
            if not page then
                done = true
                return false, err
            end
            query.offset = query.offset + #page.data
            index = 0
            if #page.data == 0 then
                done = true
                return nil
            end
        end
        index = index + 1
        return page.data[index]
    end
end

return _M
