-- Callbacks (notifications) the platform sends to the merchant: verified
-- exactly like a response, then the resource decrypted with the APIv3 key.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local error = error
local pairs = pairs
local tostring = tostring
local type = type
local format = string.format

local _M = {}

-- Copies headers with lower-case names.  A repeated header (a list, as
-- ngx.req.get_headers returns, or one name in two cases) cannot be
-- trusted and is left out, so it counts as missing.
local function lower_headers(headers)
    local out, repeated = {}, {}
    for name, value in pairs(headers) do
        if type(name) == "string" then
            local lower = name:lower()
            if type(value) ~= "string" or out[lower] ~= nil then
                repeated[lower] = true
            end
            out[lower] = value
        end
    end
    for lower in pairs(repeated) do
        out[lower] = nil
    end
    return out
end

local function failure(kind, step, message, extra)
    local fields = { step = step }
    for k, v in pairs(extra or {}) do
        fields[k] = v
    end
    return nil, errors.new(kind, "notification " .. message, fields)
end

-- Checks the encrypted resource; returns nonce, associated data and
-- ciphertext, or nil and an error.
local function resource_fields(resource)
    if type(resource) ~= "table" then
        return failure("input", "parse", "has no resource object")
    end
    if resource.algorithm ~= "AEAD_AES_256_GCM" then
        return failure("input", "parse", format("resource algorithm %q is not "
            .. "AEAD_AES_256_GCM", tostring(resource.algorithm)))
    end
    if type(resource.nonce) ~= "string" or type(resource.ciphertext) ~= "string" then
        return failure("input", "parse", "resource lacks nonce or ciphertext")
    end
    -- An empty, missing or null associated_data is the same empty string.
    local aad = resource.associated_data
    if type(aad) ~= "string" then
        aad = ""
    end
    return resource.nonce, aad, resource.ciphertext
end

-- Verifies and decrypts a callback.  headers: the request headers (names
-- in any case); body: the raw request body, byte for byte.  Returns the
-- event with resource replaced by the decrypted resource (a table when
-- it is JSON, else the text), or nil and an error whose step is
-- "verify", "parse" or "decrypt", so that a handler can choose its answer.
function _M:parse_notification(headers, body)
    if type(headers) ~= "table" then
        error("bad argument #1 to 'parse_notification' (table expected, got "
            .. type(headers) .. ")", 2)
    end
    if type(body) ~= "string" then
        error("bad argument #2 to 'parse_notification' (string expected, got "
            .. type(body) .. ")", 2)
    end
    if not self.transport then
        return failure("config", "verify", "cannot be checked: the client is closed")
    end
    if not self.keys.apiv3_key then
        return failure("config", "decrypt", "cannot be decrypted without apiv3_key")
    end

    -- A callback has no status: errors about it carry none.
    local message = { headers = lower_headers(headers), body = body }
    local ok, err = self.keys:verify(message, self._fetcher(self, self:_deadline()),
        "notification")
    if not ok then
        err.step = err.step or "verify"
        return nil, err
    end

    local event, why = core.json_decode(body)
    if type(event) ~= "table" then
        return failure("input", "parse", "body is not a JSON object: " .. tostring(why))
    end
    local nonce, aad, ciphertext = resource_fields(event.resource)
    if not nonce then
        return nil, aad
    end
    local plain
    plain, why = self.keys.apiv3_key:decrypt(nonce, aad, ciphertext)
    if not plain then
        return failure("decrypt", "decrypt", "resource could not be decrypted with the "
            .. "APIv3 key: " .. why, { id = event.id })
    end

    local decoded = core.json_decode(plain)
    event.resource = decoded ~= nil and decoded or plain
    return event
end

return _M
