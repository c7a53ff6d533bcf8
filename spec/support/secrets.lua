-- Records, across a whole busted run, every secret the specs handle and
-- everything the library says, so that tools/scan-secrets.lua can check
-- that no secret ever appears in an error, a log line, a tostring, a
-- sandbox log or the command-line tool's output.
--
-- Active only when WXP_SECRETS_DIR names a folder: it appends secrets to
-- DIR/needles (one "kind<TAB>hex" line each, so the file itself shows no
-- secret in clear) and library output to DIR/captured.
local dir = os.getenv("WXP_SECRETS_DIR")

local _M = { active = dir ~= nil and dir ~= "" }

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function append(name, text)
    local f = assert(io.open(dir .. "/" .. name, "a"))
    f:write(text)
    f:close()
end

-- Records a secret of some kind (private_key, apiv3_key, signature,
-- authorization, personal).
function _M.needle(kind, value)
    if _M.active and type(value) == "string" and #value >= 4 then
        append("needles", kind .. "\t" .. hex(value) .. "\n")
    end
end

-- Records text the library produced.
function _M.capture(text)
    if _M.active and text ~= nil then
        append("captured", tostring(text) .. "\n")
    end
end

-- A plaintext counts as personal data when it looks like a name or a
-- phone number: non-ASCII text, or a run of six digits.
local function is_personal(text)
    return type(text) == "string" and #text >= 4
        and (text:find("[\128-\255]") ~= nil or text:find("%d%d%d%d%d%d") ~= nil)
end

-- The base64 body of a PEM private key: its second line, which is long
-- and unique.
local function key_body(pem)
    return type(pem) == "string" and pem:match("\n([A-Za-z0-9+/=]+)\r?\n") or nil
end

local function wrap_method(class, name, before, after)
    local mt = debug.getregistry()[class]
    local methods = mt and mt.__index
    local original = methods and methods[name]
    if not original then
        return
    end
    methods[name] = function(...)
        if before then
            before(...)
        end
        local results = table.pack(original(...))
        if after then
            after(table.unpack(results, 1, results.n))
        end
        return table.unpack(results, 1, results.n)
    end
end

-- Installs the recording wrappers on the core, the errors module and
-- clients.  Idempotent.
function _M.install()
    if not _M.active or _M.installed then
        return
    end
    _M.installed = true
    local core = require("wechatpay.core")
    local errors = require("wechatpay.errors")
    local client = require("wechatpay.client")

    local generate = core.generate_test_key
    core.generate_test_key = function(...)
        local pem = generate(...)
        _M.needle("private_key", key_body(pem))
        return pem
    end
    local load_private = core.load_private_key
    core.load_private_key = function(pem, ...)
        _M.needle("private_key", key_body(pem))
        return load_private(pem, ...)
    end
    local aead = core.new_aead_key
    core.new_aead_key = function(key, ...)
        _M.needle("apiv3_key", key)
        return aead(key, ...)
    end
    local authorization = core.authorization
    core.authorization = function(...)
        local header, err = authorization(...)
        if header then
            _M.needle("authorization", header)
            _M.needle("signature", header:match('signature="([^"]+)"'))
        end
        return header, err
    end

    wrap_method("wechatpay.PrivateKey", "sign", nil, function(signature)
        _M.needle("signature", signature)
    end)
    wrap_method("wechatpay.PrivateKey", "decrypt", nil, function(plain)
        if is_personal(plain) then
            _M.needle("personal", plain)
        end
    end)
    wrap_method("wechatpay.PublicKey", "encrypt", function(_, plain)
        if is_personal(plain) then
            _M.needle("personal", plain)
        end
    end)

    local new_error = errors.new
    errors.new = function(...)
        local err = new_error(...)
        _M.capture(tostring(err))
        for _, value in pairs(err) do
            if type(value) == "string" then
                _M.capture(value)
            end
        end
        return err
    end

    local log = client._log
    client._log = function(self, level, message)
        _M.capture(level .. " " .. tostring(message))
        return log(self, level, message)
    end

    local new_client = client.new
    client.new = function(...)
        local c, err = new_client(...)
        if c then
            _M.capture(tostring(c))
        end
        return c, err
    end
    local loaded = package.loaded.wechatpay
    if loaded then
        loaded.new = client.new
    end
end

return _M
