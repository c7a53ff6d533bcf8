-- Small helpers shared by the sandbox modules: random text, base64,
-- percent-decoding, time formats, loopback addresses, files and socket
-- errors.
local core = require("wechatpay.core")
local errno = require("cqueues.errno")

local byte = string.byte
local char = string.char
local concat = table.concat
local floor = math.floor

local _M = {}

local ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
local HEX_DIGITS = "0123456789ABCDEF"
local BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function hex_pair_to_char(pair)
    return char(tonumber(pair, 16))
end

-- Returns n random bytes.  core.nonce() is 16 bytes from OpenSSL's
-- RAND_bytes written as 32 hex digits, so it serves as the source.
function _M.random_bytes(n)
    local parts = {}
    local have = 0
    while have < n do
        parts[#parts + 1] = (core.nonce():gsub("%x%x", hex_pair_to_char))
        have = have + 16
    end
    return concat(parts):sub(1, n)
end

-- Returns n characters drawn uniformly from alphabet (at most 256
-- characters).  Bytes that would bias the draw are discarded.
function _M.random_string(alphabet, n)
    local size = #alphabet
    local limit = 256 - 256 % size
    local out = {}
    while #out < n do
        local bytes = _M.random_bytes(n * 2)
        for i = 1, #bytes do
            local b = byte(bytes, i)
            if b < limit then
                local k = b % size + 1
                out[#out + 1] = alphabet:sub(k, k)
                if #out == n then
                    break
                end
            end
        end
    end
    return concat(out)
end

function _M.random_alphanumeric(n)
    return _M.random_string(ALPHANUMERIC, n)
end

function _M.random_digits(n)
    return _M.random_string("0123456789", n)
end

-- Returns n upper-case hex digits whose first digit is not 0, so that
-- the text survives a round trip through an ASN.1 INTEGER unchanged.
function _M.random_serial(n)
    return _M.random_string("123456789ABCDEF", 1) .. _M.random_string(HEX_DIGITS, n - 1)
end

-- Encodes bytes as standard base64 with padding.
function _M.base64_encode(data)
    local out = {}
    for i = 1, #data, 3 do
        local a, b, c = byte(data, i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local c1 = floor(n / 262144) % 64 + 1
        local c2 = floor(n / 4096) % 64 + 1
        local c3 = floor(n / 64) % 64 + 1
        local c4 = n % 64 + 1
        out[#out + 1] = BASE64_ALPHABET:sub(c1, c1) .. BASE64_ALPHABET:sub(c2, c2)
            .. (b and BASE64_ALPHABET:sub(c3, c3) or "=")
            .. (c and BASE64_ALPHABET:sub(c4, c4) or "=")
    end
    return concat(out)
end

-- Decodes %XX escapes only.  A '+' stays a '+': encrypted values are
-- base64, and a client that left '+' unescaped still means a plus sign.
-- Returns the decoded text, or nil and a message for a broken escape.
function _M.percent_decode(s)
    if not s:find("%", 1, true) then
        return s
    end
    if s:sub(-1) == "%" then
        return nil, "invalid percent-encoding: \"%\" at the end"
    end
    local bad
    local decoded = s:gsub("%%(..?)", function(hex)
        if #hex == 2 and hex:match("^%x%x$") then
            return hex_pair_to_char(hex)
        end
        bad = bad or hex
        return ""
    end)
    if bad then
        return nil, "invalid percent-encoding \"%" .. bad .. "\""
    end
    return decoded
end

-- Formats a Unix time as RFC 3339 in China Standard Time (+08:00), the
-- zone the platform uses for effective_time and expire_time.
function _M.rfc3339_china(unix_time)
    return os.date("!%Y-%m-%dT%H:%M:%S", unix_time + 8 * 3600) .. "+08:00"
end

-- Formats a Unix time for the HTTP Date header.
function _M.http_date(unix_time)
    return os.date("!%a, %d %b %Y %H:%M:%S GMT", unix_time)
end

-- Returns text unchanged when it is UTF-8 that JSON encoding accepts;
-- otherwise every byte outside printable ASCII becomes \xNN.
function _M.printable(text)
    if core.utf8_check(text) and not text:find("\0", 1, true) then
        return text
    end
    return (text:gsub("[^\32-\126]", function(c)
        return string.format("\\x%02X", byte(c))
    end))
end

-- Returns the number of one dotted-decimal octet, or nil when the text
-- is not 0 to 255 without leading zeros.  The socket layer's parser reads
-- a leading 0 as octal, so "0127" would not be 127.
local function octet(text)
    if text ~= "0" and text:sub(1, 1) == "0" then
        return nil
    end
    local value = tonumber(text)
    if #text > 3 or value > 255 then
        return nil
    end
    return value
end

-- Checks the host literally, without resolving it: it must name a
-- loopback address.  Returns the address in the form the socket layer
-- takes: 127.0.0.0/8 in dotted-decimal form, ::1, or 127.0.0.1 for
-- localhost.  Returns nil and a message otherwise.
function _M.loopback_address(host)
    if host == "localhost" then
        return "127.0.0.1"
    end
    local unbracketed = host:match("^%[(.*)%]$") or host
    if unbracketed == "::1" or unbracketed:lower() == "0:0:0:0:0:0:0:1" then
        return "::1"
    end
    local a, b, c, d = host:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
    if a and octet(a) == 127 and octet(b) and octet(c) and octet(d) then
        return host
    end
    return nil, "host " .. host .. " is not a loopback address; the sandbox listens only"
        .. " on 127.0.0.0/8, ::1 or localhost"
end

-- Quotes a string for /bin/sh.
function _M.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Writes data to path.  With private = true the file is created with
-- mode 0600 before any data goes in.  Returns true or nil and a message.
function _M.write_file(path, data, private)
    if private then
        -- Lua cannot set a file mode, so the shell creates the file under
        -- umask 077.  Removing it first drops the mode of an older file.
        os.remove(path)
        local ok = os.execute("umask 077 && : > " .. _M.shell_quote(path))
        if not ok then
            return nil, "cannot create " .. path .. " with mode 0600"
        end
    end
    local f, err = io.open(path, "wb")
    if not f then
        return nil, err
    end
    local ok, write_err = f:write(data)
    f:close()
    if not ok then
        return nil, "cannot write " .. path .. ": " .. tostring(write_err)
    end
    return true
end

-- Writes data to path through a temporary file and a rename, so that a
-- reader sees either nothing or the whole file.  private as in
-- write_file.
function _M.write_file_atomic(path, data, private)
    local temporary = path .. ".tmp"
    local ok, err = _M.write_file(temporary, data, private)
    if not ok then
        return nil, err
    end
    ok, err = os.rename(temporary, path)
    if not ok then
        os.remove(temporary)
        return nil, "cannot rename " .. temporary .. " to " .. path .. ": " .. tostring(err)
    end
    return true
end

-- Returns an empty header list ({ name, value } pairs in sending order)
-- and a function add(name, value) that appends to it, except for the
-- names in omit (lower-case keys), which a fault may drop.
function _M.header_list(omit)
    local headers = {}
    local function add(name, value)
        if not (omit and omit[name:lower()]) then
            headers[#headers + 1] = { name, value }
        end
    end
    return headers, add
end

-- Returns a socket error as a value (an errno number) instead of raising
-- it, so that one broken connection cannot unwind a server.  It is an
-- onerror handler for cqueues sockets.
function _M.return_socket_error(_, _, err)
    return err
end

-- Describes a socket error: an errno number as its text, anything else
-- as a string.
function _M.describe_socket_error(err)
    if type(err) == "number" then
        return errno.strerror(err)
    end
    return tostring(err)
end

return _M
