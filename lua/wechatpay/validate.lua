-- Checks of values before they are sent, so that what the platform would
-- refuse fails here with an input error that names the field.  Each check
-- returns the value to send, or nil and an error.
local compat = require("wechatpay.compat")
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local math_type = compat.math_type
local pairs = pairs
local tointeger = compat.tointeger
local tostring = tostring
local type = type
local format = string.format

local input = errors.input

local _M = {}

-- Checks a text field: a string of min..max bytes of UTF-8 that the
-- platform accepts (1- to 3-byte characters only).
function _M.text(field, value, min, max)
    if type(value) ~= "string" then
        return input(field, "must be a string, got " .. type(value))
    end
    if #value < min then
        if min == 1 then
            return input(field, "must not be empty")
        end
        return input(field, format("must be at least %d bytes, got %d", min, #value))
    end
    if #value > max then
        return input(field, format("must be at most %d bytes, got %d", max, #value))
    end
    local ok, why = core.utf8_check(value)
    if not ok then
        return input(field, why)
    end
    local control = value:find("[%z\1-\31\127]")
    if control then
        return input(field, format("contains a control character at byte %d", control))
    end
    return value
end

-- Checks an integer field in min..max; a float with an integral value
-- (1234.0) is accepted as that integer.  Strings are refused because the
-- platform refuses a JSON string where it expects an integer.  On LuaJIT
-- an integer must be within 2^53 - 1 (see compat.lua).
function _M.integer(field, value, min, max)
    local n = type(value) == "number" and tointeger(value) or nil
    if math_type(n) ~= "integer" then
        if compat.luajit and type(value) == "number" and value % 1 == 0 then
            return input(field, format("must be an integer from -(2^53 - 1) to 2^53 - 1 "
                .. "(LuaJIT numbers are doubles), got %s", tostring(value)))
        end
        if type(value) == "number" then
            return input(field, "must be an integer, got " .. tostring(value))
        end
        return input(field, "must be an integer, got " .. type(value))
    end
    if min and n < min then
        return input(field, format("must be at least %d, got %d", min, n))
    end
    if max and n > max then
        return input(field, format("must be at most %d, got %d", max, n))
    end
    return n
end

-- Checks a merchant order number: 1 to 32 ASCII letters, digits and
-- - _ | *, the set the platform accepts for out_trade_no.
function _M.out_trade_no(field, value)
    if type(value) ~= "string" then
        return input(field, "must be a string, got " .. type(value))
    end
    if #value < 1 or #value > 32 then
        return input(field, format("must be 1 to 32 characters, got %d", #value))
    end
    local bad = value:find("[^A-Za-z0-9%-_|*]")
    if bad then
        return input(field, format("invalid character at position %d; only letters, "
            .. "digits and - _ | * are allowed", bad))
    end
    return value
end

-- Checks that a table has only the fields listed in allowed.
function _M.known_fields(what, tbl, allowed)
    for key in pairs(tbl) do
        if not allowed[key] then
            return input(tostring(key), "unknown field for " .. what)
        end
    end
    return true
end

-- Checks opts[name], an option of new, in min..max, where integer options
-- need an integer.  Returns the value or default, or nil and a config
-- error.
function _M.number_option(opts, name, default, min, max, integer)
    local value = opts[name]
    if value == nil then
        return default
    end
    local ok = type(value) == "number" and value >= min and value <= max
    if ok and integer then
        value = tointeger(value)
        ok = value ~= nil
    end
    if not ok then
        return errors.config(name, format("must be %s from %s to %s", integer
            and "an integer" or "a number", tostring(min), tostring(max)))
    end
    return value
end

return _M
