-- Error values returned by the client: a table with kind and message,
-- plus status, code, detail and request_id for platform answers, and a
-- readable one-line tostring.
local getmetatable = getmetatable
local pairs = pairs
local setmetatable = setmetatable
local tostring = tostring
local type = type
local concat = table.concat

local _M = {}

-- The kinds a caller can branch on.
_M.KINDS = {
    config = true,   -- the client's options are wrong
    input = true,    -- a value given to a call would be refused
    network = true,  -- the request could not be sent or answered
    api = true,      -- the platform answered with an error status
    verify = true,   -- the response signature could not be verified
    decrypt = true,  -- an encrypted field or resource could not be read
}

-- Writes control characters as escapes, so that a message from a server
-- stays on one line and cannot drive a terminal.
local function one_line(text)
    return (tostring(text):gsub("[%z\1-\31\127]", function(c)
        if c == "\n" then
            return "\\n"
        elseif c == "\r" then
            return "\\r"
        elseif c == "\t" then
            return " "
        end
        return string.format("\\x%02X", c:byte())
    end))
end

local mt = {}
mt.__index = mt

function mt.__tostring(err)
    local parts = { "wechatpay: ", err.kind, " error" }
    if err.status then
        parts[#parts + 1] = ": HTTP " .. tostring(err.status)
    end
    if err.code then
        parts[#parts + 1] = (err.status and " " or ": ") .. one_line(err.code)
    end
    parts[#parts + 1] = ": " .. one_line(err.message)
    if err.request_id then
        parts[#parts + 1] = " (Request-ID " .. one_line(err.request_id) .. ")"
    end
    return concat(parts)
end

-- Creates an error.  fields may add status, code, detail, request_id,
-- field (the option or input at fault) and reason (a short code).  The
-- message is kept on one line.
function _M.new(kind, message, fields)
    if not _M.KINDS[kind] then
        error("unknown error kind " .. tostring(kind), 2)
    end
    local err = { kind = kind, message = one_line(message) }
    if type(fields) == "table" then
        for k, v in pairs(fields) do
            err[k] = v
        end
    end
    return setmetatable(err, mt)
end

-- Returns true for an error made here.
function _M.is_error(value)
    return getmetatable(value) == mt
end

-- Shortcuts returning nil, err for the common kinds.
function _M.config(field, message)
    return nil, _M.new("config", field .. ": " .. message, { field = field })
end

function _M.input(field, message)
    return nil, _M.new("input", field .. ": " .. message, { field = field })
end

-- Sentences for the transports' failure reasons, so that a network error
-- reads the same from libcurl and from cosockets.
local NETWORK_REASONS = {
    connect = "could not connect",
    resolve = "could not resolve the host",
    timeout = "timed out",
    tls = "TLS handshake or certificate verification failed",
    reset = "connection closed or reset",
    too_large = "response too large",
    truncated = "response body truncated",
    protocol = "invalid HTTP response",
    other = "request failed",
}

-- Creates the network error of a failed request.  reason is one of the
-- keys above, and sent is true when any of the request went out.
function _M.network(req, reason, message, sent)
    return _M.new("network", string.format("%s %s: %s: %s", req.method,
        req.url, NETWORK_REASONS[reason] or reason, message),
        { reason = reason, sent = sent })
end

return _M
