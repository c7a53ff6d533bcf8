-- A small HTTP/1.1 client on cqueues for the sandbox's callbacks: one
-- request per connection, to an http URL whose host is a loopback
-- address.  Waits on the socket yield to the event loop, so the server
-- keeps serving other connections while a callback is in flight.
--
-- Limits: no https, no redirects and no proxies.  The response body is
-- read only up to max_body bytes.
local cqueues = require("cqueues")
local errno = require("cqueues.errno")
local socket = require("cqueues.socket")
local util = require("wechatpay.sandbox.util")

local concat = table.concat
local monotime = cqueues.monotime

local _M = {}

local MAX_URL_BYTES = 2048
local MAX_HEAD_BYTES = 16 * 1024
local READ_CHUNK = 16 * 1024

local return_error = util.return_socket_error
local describe_error = util.describe_socket_error

-- Splits the authority into the host as written and the port.  Returns
-- them, or nil and a message.
local function split_authority(authority)
    if authority:find("@", 1, true) then
        return nil, "url must not contain user information (text before @)"
    end
    local host, port_text
    if authority:sub(1, 1) == "[" then
        host, port_text = authority:match("^(%[[^%]]*%])(.*)$")
    else
        host, port_text = authority:match("^([^:]*)(.*)$")
    end
    if not host or host == "" then
        return nil, "url has no host"
    end
    if port_text == "" then
        return host, 80
    end
    local digits = port_text:match("^:(%d+)$")
    local port = digits and #digits <= 5 and tonumber(digits)
    if not port or port < 1 or port > 65535 then
        return nil, "url has an invalid port " .. port_text:sub(2)
            .. "; expected 1 to 65535"
    end
    return host, port
end

-- Parses an absolute http URL and checks its host literally, without
-- resolving any name.  The host must be in 127.0.0.0/8 (dotted decimal),
-- [::1] or localhost.  Returns { address, port, authority, target }, or
-- nil and a message.  The fragment is dropped.
function _M.parse_url(url)
    if type(url) ~= "string" or url == "" or #url > MAX_URL_BYTES then
        return nil, "url must be a string of 1 to " .. MAX_URL_BYTES .. " bytes"
    end
    if url:find("[^\33-\126]") then
        return nil, "url contains spaces, control characters or non-ASCII bytes;"
            .. " percent-encode them"
    end
    local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then
        return nil, "url must be an absolute http URL such as http://127.0.0.1:8080/notify"
    end
    if scheme:lower() ~= "http" then
        return nil, "url must use http, not " .. scheme
            .. "; the sandbox sends callbacks over plain http only"
    end
    local authority, target = rest:match("^([^/?#]*)(.*)$")
    local host, port = split_authority(authority)
    if not host then
        return nil, port
    end
    local address = util.loopback_address(host)
    if not address then
        return nil, "the host " .. host .. " is not a loopback address; callbacks go only"
            .. " to 127.0.0.0/8 in dotted decimal, [::1] or localhost"
    end
    target = target:gsub("#.*$", "")
    if target:sub(1, 1) ~= "/" then
        target = "/" .. target
    end
    return { address = address, port = port, authority = authority, target = target }
end

-- Returns the status and the headers (lower-case names) of a response
-- head, or nil when the status line is malformed.
local function parse_head(head)
    local status = head:match("^HTTP/1%.%d (%d%d%d)[^\r\n]*")
    if not status then
        return nil
    end
    local headers = {}
    for line in head:gmatch("\n([^\r\n]+)") do
        local name, value = line:match("^([^:]+):[ \t]*(.-)[ \t]*$")
        if name then
            headers[name:lower()] = value
        end
    end
    return math.tointeger(tonumber(status)), headers
end

-- Decodes the complete chunks in raw.  Returns the data and true once
-- the last chunk (size 0) has arrived.
local function decode_chunked(raw)
    local parts = {}
    local position = 1
    while true do
        local size_hex, data_start = raw:match("^(%x%x?%x?%x?%x?%x?%x?)[^\r\n]*\r\n()",
            position)
        if not size_hex then
            return concat(parts), false
        end
        local size = tonumber(size_hex, 16)
        if size == 0 then
            return concat(parts), true
        end
        local chunk = raw:sub(data_start, data_start + size - 1)
        parts[#parts + 1] = chunk
        if #chunk < size then
            return concat(parts), false
        end
        position = data_start + size + 2
    end
end

-- A connection with a deadline (monotonic seconds) for every wait.
local Connection = {}
Connection.__index = Connection

function Connection:remaining()
    return math.max(self.deadline - monotime(), 0)
end

-- Returns the next bytes, or nil at the end of the stream, or nil and a
-- message on failure.
function Connection:read()
    local data, err = self.socket:xread(-READ_CHUNK, "b", self:remaining())
    if data then
        return data
    end
    if err == errno.ETIMEDOUT then
        return nil, "timed out after " .. self.timeout .. " s waiting for the response"
    end
    return nil, err and describe_error(err)
end

-- Reads response heads until one is not 1xx.  Returns the status, the
-- headers and the bytes after the head, or nil and a message.
function Connection:read_head(buffer)
    while true do
        local head_end, body_start = buffer:find("\r?\n\r?\n")
        if head_end then
            local status, headers = parse_head(buffer:sub(1, head_end - 1))
            if not status then
                return nil, "the receiver sent a malformed status line"
            end
            buffer = buffer:sub(body_start + 1)
            if status >= 200 then
                return status, headers, buffer
            end
        elseif #buffer > MAX_HEAD_BYTES then
            return nil, "the response head exceeds " .. MAX_HEAD_BYTES .. " bytes"
        else
            local data, err = self:read()
            if not data then
                return nil, err or "the receiver closed the connection without a response"
            end
            buffer = buffer .. data
        end
    end
end

-- Reads the body, keeping at most max_body bytes.  Stops at the end of
-- a Content-Length or chunked body, at max_body or at the end of the
-- stream.  A body cut short by a failure is returned as far as it came.
function Connection:read_body(status, headers, buffer, max_body)
    if status == 204 or status == 304 then
        return ""
    end
    local chunked = (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true)
    local length = math.tointeger(tonumber(headers["content-length"] or ""))
    local raw = buffer
    while true do
        local body, complete = raw, false
        if chunked then
            body, complete = decode_chunked(raw)
        elseif length then
            body = raw:sub(1, length)
            complete = #raw >= length
        end
        if complete or #body >= max_body then
            return body:sub(1, max_body)
        end
        local data = self:read()
        if not data then
            return body:sub(1, max_body)
        end
        raw = raw .. data
    end
end

-- Sends one request and reads the response within timeout seconds.
-- url comes from parse_url.  headers is an array of { name, value },
-- written exactly as given, so the caller adds Host, Content-Length and
-- Connection.  Returns { status, headers, body } with at most max_body
-- bytes of the body, or nil and a message.
function _M.request(url, method, headers, body, timeout, max_body)
    local ok, con = pcall(socket.connect, { host = url.address, port = url.port })
    if not ok or not con then
        return nil, "cannot create a socket: " .. tostring(con)
    end
    local connection = setmetatable({ socket = con, timeout = timeout,
        deadline = monotime() + timeout }, Connection)
    con:onerror(return_error)
    con:setmode("b", "bn")

    local connected, err = con:connect(connection:remaining())
    if not connected then
        con:close()
        if err == errno.ETIMEDOUT then
            return nil, "timed out after " .. timeout .. " s connecting to port " .. url.port
        end
        return nil, "cannot connect to port " .. url.port .. ": " .. describe_error(err)
    end

    local lines = { method .. " " .. url.target .. " HTTP/1.1" }
    for _, header in ipairs(headers) do
        lines[#lines + 1] = header[1] .. ": " .. header[2]
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = body
    local written
    written, err = con:xwrite(concat(lines, "\r\n"), "bn", connection:remaining())
    if not written then
        con:close()
        return nil, "cannot send the request: " .. describe_error(err)
    end

    local status, response_headers, rest = connection:read_head("")
    if not status then
        con:close()
        return nil, response_headers
    end
    local response_body = connection:read_body(status, response_headers, rest, max_body)
    con:close()
    return { status = status, headers = response_headers, body = response_body }
end

return _M
