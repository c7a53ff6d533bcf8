-- The OpenResty transport: HTTP/1.1 over ngx.socket.tcp cosockets, which
-- yield to nginx's event loop while they wait, so that waiting for the
-- platform does not block the worker.  It keeps idle connections in ngx_lua's keepalive
-- pool, one pool per merchant and host.
--
-- Usable where cosockets are: rewrite, access and content handlers and
-- ngx.timer callbacks.  In init, init_worker, set, header_filter,
-- body_filter and log handlers ngx.socket.tcp raises.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local ngx = ngx
local concat = table.concat
local find = string.find
local floor = math.floor
local format = string.format
local ipairs = ipairs
local lower = string.lower
local match = string.match
local max = math.max
local min = math.min
local ceil = math.ceil
local setmetatable = setmetatable
local sub = string.sub
local tonumber = tonumber
local type = type
local monotonic = core.monotonic

local _M = {}

local mt = { __index = _M }

-- Response headers beyond this count, or a head beyond this size, are a
-- broken or hostile server (the count is libcurl transport's limit).
local MAX_HEADERS = 100
local MAX_HEAD_BYTES = 64 * 1024

-- Maximum bytes read from the socket at a time.
local READ_SIZE = 16 * 1024

-- Defaults of the options pool_size and keepalive_timeout (seconds).
_M.DEFAULT_POOL_SIZE = 30
_M.DEFAULT_KEEPALIVE_TIMEOUT = 60

-- Headers the transport writes itself; a request may not set them.
local FRAMING_HEADERS = {
    ["content-length"] = true, ["transfer-encoding"] = true, connection = true,
}

-- Writes a version number such as ngx.config.nginx_version (1022001) as
-- 1.22.1.
local function version_text(n)
    return format("%d.%d.%d", floor(n / 1000000), floor(n / 1000) % 1000, n % 1000)
end

local function default_user_agent()
    local config = ngx.config
    return format("lua-wechatpay/%s (%s) %s ngx_lua/%s nginx/%s", core.VERSION,
        core.system(), (jit and jit.version or _VERSION):gsub(" ", "/"),
        version_text(config.ngx_lua_version or 0), version_text(config.nginx_version or 0))
end

-- Creates a transport.  opts: timeout and connect_timeout (seconds),
-- max_response_size (bytes), pool (a name that the pool names of this
-- transport start with, such as the merchant ID), pool_size,
-- keepalive_timeout (seconds), user_agent.
function _M.new(opts)
    return setmetatable({
        timeout = opts.timeout or 10,
        connect_timeout = opts.connect_timeout or 5,
        max_response_size = opts.max_response_size or 1024 * 1024,
        pool = opts.pool or "",
        pool_size = opts.pool_size or _M.DEFAULT_POOL_SIZE,
        keepalive_ms = ceil((opts.keepalive_timeout or _M.DEFAULT_KEEPALIVE_TIMEOUT) * 1000),
        user_agent = opts.user_agent or default_user_agent(),
    }, mt)
end

-- Splits an http(s) URL into what a connection needs.  Returns nil for
-- anything else.
local function parse_url(url)
    local scheme, authority, target = match(url, "^(https?)://([^/?#]+)(/[^#]*)$")
    if not scheme then
        return nil
    end
    local host, port = match(authority, "^%[([%x:.]+)%]:?(%d*)$")
    local connect_host = host and "[" .. host .. "]"
    if not host then
        host, port = match(authority, "^([^:@]+):?(%d*)$")
        connect_host = host
    end
    if not host then
        return nil
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    -- Cosockets resolve names through nginx's resolver directive, which
    -- never reads /etc/hosts; localhost is loopback by definition.
    if lower(host) == "localhost" then
        connect_host = "127.0.0.1"
    end
    return {
        scheme = scheme,
        host = host,
        connect_host = connect_host,
        port = port,
        authority = authority,
        target = target,
    }
end

-- {======================================================================
-- Reading a response
-- =======================================================================

-- A buffered reader over a cosocket that stops at the request deadline.
local Reader = {}
Reader.__index = Reader

local function new_reader(sock, deadline)
    return setmetatable({ sock = sock, deadline = deadline, buf = "", pos = 1,
        received = 0 }, Reader)
end

-- Reads more bytes into the buffer; returns true, or nil and the
-- cosocket's error ("timeout", "closed", ...).
function Reader:fill()
    local left = self.deadline - monotonic()
    if left <= 0 then
        return nil, "timeout"
    end
    self.sock:settimeout(max(1, ceil(left * 1000)))
    local data, err = self.sock:receiveany(READ_SIZE)
    if not data then
        return nil, err
    end
    self.received = self.received + #data
    if self.pos > #self.buf then
        self.buf = data
    else
        self.buf = sub(self.buf, self.pos) .. data
    end
    self.pos = 1
    return true
end

-- Returns the next line without its CRLF (or LF), or nil and an error:
-- "too_long" when no line end comes within limit bytes.
function Reader:line(limit)
    while true do
        local nl = find(self.buf, "\n", self.pos, true)
        if nl then
            local line = sub(self.buf, self.pos, nl - 1)
            self.pos = nl + 1
            if sub(line, -1) == "\r" then
                line = sub(line, 1, -2)
            end
            return line
        end
        if #self.buf - self.pos + 1 > limit then
            return nil, "too_long"
        end
        local ok, err = self:fill()
        if not ok then
            return nil, err
        end
    end
end

-- Appends exactly n bytes to parts; returns true, or nil and an error.
function Reader:read_into(parts, n)
    while n > 0 do
        local available = #self.buf - self.pos + 1
        if available >= n then
            parts[#parts + 1] = sub(self.buf, self.pos, self.pos + n - 1)
            self.pos = self.pos + n
            return true
        end
        if available > 0 then
            parts[#parts + 1] = sub(self.buf, self.pos)
            n = n - available
        end
        self.buf, self.pos = "", 1
        local ok, err = self:fill()
        if not ok then
            return nil, err
        end
    end
    return true
end

-- Appends everything until the server closes, at most limit bytes;
-- returns true, or nil and an error ("too_large" past the limit).
function Reader:read_to_close(parts, limit)
    local total = #self.buf - self.pos + 1
    parts[#parts + 1] = sub(self.buf, self.pos)
    self.buf, self.pos = "", 1
    while total <= limit do
        local ok, err = self:fill()
        if not ok then
            if err == "closed" then
                return true
            end
            return nil, err
        end
        total = total + #self.buf
        parts[#parts + 1] = self.buf
        self.buf = ""
    end
    return nil, "too_large"
end

function Reader:has_unread()
    return self.pos <= #self.buf
end

-- A failure while reading: the reason code and a message.
local function read_failure(err, what)
    if err == "timeout" then
        return "timeout", "no " .. what .. " before the deadline"
    elseif err == "too_long" then
        return "protocol", what .. " line too long"
    end
    return "reset", format("connection %s while reading the %s", err, what)
end

-- Reads the status line and headers of one response.  Returns the status,
-- the HTTP minor version and the headers (lower-case names, repeats
-- joined with ", "), or nil, reason, message.
local function read_head(reader)
    local line, err = reader:line(MAX_HEAD_BYTES)
    if not line then
        if err == "closed" and reader.received == 0 then
            return nil, "reset", "connection closed before any response"
        end
        return nil, read_failure(err, "status line")
    end
    local minor, status = match(line, "^HTTP/1%.([01]) (%d%d%d)")
    if not status then
        return nil, "protocol", format("status line is not HTTP/1.x: %q", sub(line, 1, 60))
    end

    local headers, count, size = {}, 0, #line
    while true do
        line, err = reader:line(MAX_HEAD_BYTES - size)
        if not line then
            if err == "too_long" then
                return nil, "protocol", format("response head is larger than %d bytes",
                    MAX_HEAD_BYTES)
            end
            return nil, read_failure(err, "response headers")
        end
        if line == "" then
            break
        end
        size = size + #line + 2
        count = count + 1
        if count > MAX_HEADERS then
            return nil, "protocol", format("response has more than %d headers", MAX_HEADERS)
        end
        local name, value = match(line, "^([^:%s]+):[ \t]*(.-)[ \t]*$")
        if name then
            name = lower(name)
            local previous = headers[name]
            headers[name] = previous and previous .. ", " .. value or value
        end
    end
    return tonumber(status), tonumber(minor), headers
end

-- Reads a chunked body into parts, then the trailers, which are dropped.
-- Returns true, or nil, reason, message.
local function read_chunked(reader, parts, limit)
    local total = 0
    while true do
        local line, err = reader:line(1024)
        if not line then
            if err == "closed" then
                return nil, "truncated", "connection closed inside the chunked body"
            end
            return nil, read_failure(err, "chunk size")
        end
        local hex = match(line, "^%s*(%x+)%s*[;]?")
        if not hex or #hex > 8 then
            return nil, "protocol", format("invalid chunk size line: %q", sub(line, 1, 40))
        end
        local size = tonumber(hex, 16)
        if size == 0 then
            break
        end
        total = total + size
        if total > limit then
            return nil, "too_large", format("response body is larger than %d bytes", limit)
        end
        local ok
        ok, err = reader:read_into(parts, size)
        if ok then
            line, err = reader:line(2)
            ok = line == ""
            err = err or "garbled"
        end
        if not ok then
            if err == "closed" then
                return nil, "truncated", "connection closed inside a chunk"
            elseif err == "garbled" or err == "too_long" then
                return nil, "protocol", "chunk not followed by CRLF"
            end
            return nil, read_failure(err, "chunk")
        end
    end
    -- Trailers (headers after the last chunk) end with an empty line.
    for _ = 1, MAX_HEADERS + 1 do
        local line, err = reader:line(MAX_HEAD_BYTES)
        if not line then
            return nil, read_failure(err, "trailers")
        end
        if line == "" then
            return true
        end
    end
    return nil, "protocol", format("response has more than %d trailers", MAX_HEADERS)
end

-- Returns whether the connection may carry another request after this
-- response, by the Connection header and the HTTP version.
local function reusable(minor, headers)
    local connection = lower(headers.connection or "")
    if find(connection, "close", 1, true) then
        return false
    end
    return minor == 1 or find(connection, "keep-alive", 1, true) ~= nil
end

-- Reads the body that follows a head.  Returns the body and whether the
-- connection is reusable, or nil, reason, message.
local function read_body(reader, method, status, minor, headers, limit)
    if method == "HEAD" or status == 204 or status == 304 then
        return "", reusable(minor, headers)
    end
    local parts = {}
    local encoding = lower(headers["transfer-encoding"] or "")
    local length = headers["content-length"]
    if encoding ~= "" then
        if not match(encoding, "chunked%s*$") then
            return nil, "protocol", "unsupported Transfer-Encoding " .. encoding
        end
        local ok, reason, message = read_chunked(reader, parts, limit)
        if not ok then
            return nil, reason, message
        end
        return concat(parts), reusable(minor, headers)
    end
    if length then
        local n = match(length, "^(%d+)$") and tonumber(length)
        if not n then
            return nil, "protocol", format("invalid Content-Length %q", sub(length, 1, 40))
        end
        if n > limit then
            return nil, "too_large", format("response body is larger than %d bytes "
                .. "(Content-Length %d)", limit, n)
        end
        local ok, err = reader:read_into(parts, n)
        if not ok then
            if err == "closed" then
                local got = #concat(parts)
                return nil, "truncated", format("body ended after %d of %d bytes", got, n)
            end
            return nil, read_failure(err, "body")
        end
        return concat(parts), reusable(minor, headers)
    end
    local ok, err = reader:read_to_close(parts, limit)
    if not ok then
        if err == "too_large" then
            return nil, "too_large", format("response body is larger than %d bytes", limit)
        end
        return nil, read_failure(err, "body")
    end
    return concat(parts), false
end

-- {======================================================================
-- Sending a request
-- =======================================================================

-- Builds the request head and body.  Returns the bytes, or nil and a
-- message for a header the transport refuses.
function _M:build_request(req, url)
    local lines = { format("%s %s HTTP/1.1", req.method, url.target) }
    local has = {}
    for _, header in ipairs(req.headers or {}) do
        if type(header) ~= "string" or find(header, "[\r\n%z]") then
            return nil, "a request header contains a line break or NUL"
        end
        local name = lower(match(header, "^([^:]+):") or "")
        if FRAMING_HEADERS[name] then
            return nil, "the " .. name .. " header is written by the transport"
        end
        has[name] = true
        lines[#lines + 1] = header
    end
    if not has.host then
        lines[#lines + 1] = "Host: " .. url.authority
    end
    if not has["user-agent"] then
        lines[#lines + 1] = "User-Agent: " .. self.user_agent
    end
    -- As libcurl sends it: no body with GET, and with DELETE only when
    -- there is one; other methods always say how long the body is.
    local body = req.body
    if req.method == "GET" or (req.method == "DELETE" and body == nil) then
        body = nil
    else
        body = body or ""
        lines[#lines + 1] = "Content-Length: " .. #body
    end
    lines[#lines + 1] = ""
    lines[#lines + 1] = body or ""
    return concat(lines, "\r\n")
end

-- Classifies a connect failure.
local function connect_failure(err)
    if err == "timeout" then
        return "timeout", "connect timed out"
    elseif find(err, "resolve", 1, true) or find(err, "resolver", 1, true) then
        return "resolve", err
    end
    return "connect", err
end

-- Opens (or takes from the pool) a connection and completes TLS.
-- Returns the socket and whether it came from the pool, or nil, reason,
-- message.
function _M:connect(url, deadline, pooled)
    local sock = ngx.socket.tcp()
    local left = deadline - monotonic()
    if left <= 0 then
        return nil, "timeout", "no time left to connect"
    end
    local connect_ms = max(1, ceil(min(self.connect_timeout, left) * 1000))
    sock:settimeouts(connect_ms, ceil(left * 1000), ceil(left * 1000))

    local pool = format("wechatpay:%s:%s://%s:%d", self.pool, url.scheme, url.host, url.port)
    local ok, err
    if pooled then
        ok, err = sock:connect(url.connect_host, url.port, { pool = pool,
            pool_size = self.pool_size })
    else
        -- A pool that is never filled: connect finds nothing there and
        -- opens a new connection, which is closed after its response.
        ok, err = sock:connect(url.connect_host, url.port, { pool = pool .. ":unpooled" })
    end
    if not ok then
        return nil, connect_failure(err)
    end

    local reused = (sock:getreusedtimes() or 0) > 0
    if url.scheme == "https" and not reused then
        left = deadline - monotonic()
        if left <= 0 then
            sock:close()
            return nil, "timeout", "no time left for the TLS handshake"
        end
        sock:settimeouts(connect_ms, ceil(left * 1000), ceil(left * 1000))
        ok, err = sock:sslhandshake(false, url.host, true)
        if not ok then
            sock:close()
            if err == "timeout" then
                return nil, "timeout", "TLS handshake timed out"
            end
            return nil, "tls", err
        end
        -- A handshake that completes within its first call and fails
        -- verification closes the socket, yet sslhandshake(false, ...)
        -- returns true (lua-resty-core 0.1.25, resty/core/socket.lua).
        if not sock:getreusedtimes() then
            return nil, "tls", "certificate verify failed"
        end
    end
    return sock, reused
end

-- A failed exchange: the reason code, a message, whether request bytes
-- went out (always once send was called, as a partial write cannot be
-- told apart) and whether the server sent nothing back.
local function failure(reason, message, silent)
    return { reason = reason, message = message, sent = true, silent = silent }
end

-- Sends the request bytes and reads one response.  Returns the response
-- and whether the connection is reusable, or nil and a failure.
local function exchange(sock, request, method, deadline, limit)
    local left = deadline - monotonic()
    if left <= 0 then
        return nil, { reason = "timeout", message = "no time left to send", sent = false }
    end
    sock:settimeout(max(1, ceil(left * 1000)))
    local bytes, err = sock:send(request)
    if not bytes then
        if err == "timeout" then
            return nil, failure("timeout", "sending timed out", true)
        end
        return nil, failure("reset", "connection " .. err .. " while sending", true)
    end

    local reader = new_reader(sock, deadline)
    local status, minor, headers
    repeat
        -- Interim 1xx responses (100 Continue, 103) precede the real one.
        status, minor, headers = read_head(reader)
        if not status then
            return nil, failure(minor, headers, reader.received == 0)
        end
    until status >= 200 or status == 101
    if status == 101 then
        return nil, failure("protocol", "the server switched protocols", false)
    end

    local body, keep, message = read_body(reader, method, status, minor, headers, limit)
    if not body then
        return nil, failure(keep, message, false)
    end
    return { status = status, headers = headers, body = body },
        keep and not reader:has_unread()
end

-- Sends req = { method, url, headers = { "Name: value", ... }, body,
-- timeout (seconds left for this request), idempotent }.  Returns
-- { status, headers (lower-case names), body, reused (true when the
-- connection came from the pool) } or nil and a network error
-- (errors.network) whose sent field tells whether any of the request
-- went out.
--
-- A request that is not idempotent goes on a new connection, closed
-- after its response, because a pooled connection may have been closed
-- by the server and such a request must not be sent twice.  An
-- idempotent request that fails on a pooled connection before any answer
-- arrives is sent again on another connection, as libcurl does.
function _M:send(req)
    local deadline = monotonic() + (req.timeout or self.timeout)
    local url = parse_url(req.url)
    local res, fail
    if not url then
        fail = { reason = "protocol", message = "unsupported URL", sent = false }
    else
        local request, why = self:build_request(req, url)
        if request then
            res, fail = self:attempts(req, url, request, deadline)
        else
            fail = { reason = "other", message = why, sent = false }
        end
    end
    if res then
        return res
    end
    return nil, errors.network(req, fail.reason, fail.message, fail.sent)
end

-- Runs the exchange, on another connection when a pooled one turns out to
-- be dead: every idle connection of a pool may have been closed by the
-- server, so up to pool_size + 1 tries.  Returns the response, or nil and
-- a failure.
function _M:attempts(req, url, request, deadline)
    local pooled = req.idempotent == true
    for _ = 1, self.pool_size + 1 do
        local sock, reused, message = self:connect(url, deadline, pooled)
        if not sock then
            return nil, { reason = reused, message = message, sent = false }
        end
        local res, result = exchange(sock, request, req.method, deadline,
            self.max_response_size)
        if res then
            if not (pooled and result and sock:setkeepalive(self.keepalive_ms,
                self.pool_size)) then
                sock:close()
            end
            res.reused = reused
            return res
        end
        sock:close()
        if not (reused and result.silent and result.reason == "reset") then
            return nil, result
        end
    end
    return nil, failure("reset", "every pooled connection was closed by the server", true)
end

-- Closes nothing: idle connections belong to the worker's pool and close
-- after keepalive_timeout.
function _M.close()
end

return _M
