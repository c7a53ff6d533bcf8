-- Checks of staff fields given on the command line or in a CSV file,
-- made before anything is sent so that each bad value is reported with
-- the reason.  Sizes are the platform's limits, in bytes of UTF-8 (name
-- and mobile before encryption).  Messages never show a name or a
-- mobile unmasked.
local output = require("wechatpay.cli.output")

local _M = {}

_M.LIMITS = {
    corpid = 64, userid = 64, name = 64, mobile = 32, qr_code = 1024, avatar = 1024,
    group_qrcode = 1024, work_id = 64,
}

-- The fields that registration requires, in the platform's order.
_M.REQUIRED = { "store_id", "corpid", "userid", "name", "mobile", "qr_code", "avatar" }

-- The fields an update may change.
_M.UPDATABLE = { "name", "mobile", "qr_code", "avatar", "group_qrcode" }

local URL_FIELDS = { qr_code = true, avatar = true, group_qrcode = true }

-- Returns the first problem of UTF-8 text, or nil when there is none.
-- Problems are invalid UTF-8, a control character, and a 4-byte
-- character (outside the Basic Multilingual Plane, such as an emoji),
-- which the platform rejects.
local function text_problem(value)
    if not utf8.len(value) then
        return "is not valid UTF-8"
    end
    for _, c in utf8.codes(value) do
        if c > 0xFFFF then
            return string.format("contains U+%X, a character outside the Basic Multilingual "
                .. "Plane (such as an emoji), which the platform rejects", c)
        end
        if c < 0x20 or c == 0x7F or (c >= 0x80 and c < 0xA0) then
            return string.format("contains the control character U+%04X", c)
        end
    end
    return nil
end

-- Shows a value in a message: masked for name and mobile unless
-- show_personal_data, and never longer than 40 characters.
local function displayed_value(name, value, show_personal_data)
    if not show_personal_data then
        if name == "name" then
            value = output.mask_name(value)
        elseif name == "mobile" then
            value = output.mask_mobile(value)
        end
    end
    if utf8.len(value) and utf8.len(value) > 40 then
        value = value:sub(1, utf8.offset(value, 38) - 1) .. "..."
    end
    return output.printable(value)
end

-- Checks a mobile number: 11 digits starting with 1 (mainland China), or
-- + and 7 to 15 digits (ITU-T E.164) for other regions.
local function mobile_problem(value)
    if value:match("^1%d%d%d%d%d%d%d%d%d%d$") then
        return nil
    end
    local digits = value:match("^%+(%d+)$")
    if digits and #digits >= 7 and #digits <= 15 then
        return nil
    end
    return "is invalid: expected 11 digits starting with 1, or + and 7 to 15 digits"
end

-- Checks one text field.  Returns nil when it is valid, else a message
-- that starts with the field name.
function _M.problem(name, value, show_personal_data)
    if value == nil or value == "" then
        return name .. " is empty"
    end
    local limit = _M.LIMITS[name]
    if limit and #value > limit then
        return string.format("%s is too long: %d bytes, at most %d", name, #value, limit)
    end
    local problem = text_problem(value)
    if not problem and (name == "userid" or name == "corpid" or URL_FIELDS[name])
        and value:find("%s") then
        problem = "contains a space"
    end
    if not problem and name == "mobile" then
        problem = mobile_problem(value)
    end
    if not problem and URL_FIELDS[name] and not value:match("^https?://[^/]") then
        problem = "is not an http:// or https:// URL"
    end
    if problem then
        return string.format("%s %s (%s)", name, problem, displayed_value(name, value,
            show_personal_data))
    end
    return nil
end

-- Parses a store ID written in decimal.  Returns the integer, or nil and
-- a message.
function _M.store_id(text)
    local value = type(text) == "string" and text:match("^%d+$")
        and math.tointeger(tonumber(text))
    if math.type(text) == "integer" and text >= 0 then
        value = text
    end
    if not value then
        return nil, "store_id is invalid: expected a non-negative integer, got "
            .. output.printable(tostring(text))
    end
    return value
end

return _M
