-- Integer helpers that behave the same on Lua 5.4 and on LuaJIT
-- (OpenResty).  LuaJIT has no integer subtype: every number is a double.
-- There a number counts as an integer when it is integral and within
-- 2^53 - 1, the range in which a double holds every integer exactly; a
-- larger one is rejected, because it may already stand for another
-- integer (2^53 + 1 reads as 2^53).
local floor = math.floor
local type = type

local _M = {}

_M.MAX_SAFE_INTEGER = 2 ^ 53 - 1

local MAX_SAFE_INTEGER = _M.MAX_SAFE_INTEGER

-- True on LuaJIT, where the helpers below replace math.type and
-- math.tointeger.
_M.luajit = math.type == nil

local function is_safe_integer(x)
    return type(x) == "number" and x == floor(x) and x >= -MAX_SAFE_INTEGER
        and x <= MAX_SAFE_INTEGER
end

-- math.type: "integer", "float", or nil for a value that is not a number.
_M.math_type = math.type or function(x)
    if type(x) ~= "number" then
        return nil
    end
    return is_safe_integer(x) and "integer" or "float"
end

-- math.tointeger: the number as an integer, or nil when it has no exact
-- integer value (or, on LuaJIT, is beyond 2^53 - 1).
_M.tointeger = math.tointeger or function(x)
    if is_safe_integer(x) then
        return x
    end
    return nil
end

return _M
