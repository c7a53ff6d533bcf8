-- A small HTTP/1.1 server on cqueues: request line, headers,
-- Content-Length bodies, keep-alive and pipelining, optional TLS.  Each
-- connection runs in its own coroutine, and nothing a peer sends can
-- stop the others: socket errors are returned, not raised, and the
-- handler runs under pcall.
--
-- Limits: chunked request bodies are rejected with 411, because the
-- platform's clients always send Content-Length.  There is no HTTP/2.
local cqueues = require("cqueues")
local errno = require("cqueues.errno")
local socket = require("cqueues.socket")
local util = require("wechatpay.sandbox.util")

local concat = table.concat
local monotime = cqueues.monotime

local _M = {}
local mt = { __index = _M }

local MAX_HEAD_BYTES = 16 * 1024
local MAX_HEADER_LINES = 100
local MAX_BODY_BYTES = 1024 * 1024
local MAX_CONNECTIONS = 256
local READ_CHUNK = 64 * 1024
-- Seconds: an idle keep-alive connection, a request in progress, a
-- response being written, a TLS handshake.
local IDLE_TIMEOUT = 60
local REQUEST_TIMEOUT = 30
local WRITE_TIMEOUT = 30
local HANDSHAKE_TIMEOUT = 10

local REASONS = {
    [100] = "Continue", [200] = "OK", [204] = "No Content",
    [400] = "Bad Request", [401] = "Unauthorized", [403] = "Forbidden",
    [404] = "Not Found", [405] = "Method Not Allowed", [408] = "Request Timeout",
    [409] = "Conflict",
    [411] = "Length Required", [413] = "Content Too Large",
    [429] = "Too Many Requests", [431] = "Request Header Fields Too Large",
    [500] = "Internal Server Error", [502] = "Bad Gateway",
    [503] = "Service Unavailable", [504] = "Gateway Timeout",
    [505] = "HTTP Version Not Supported",
}

local return_error = util.return_socket_error
local describe_error = util.describe_socket_error

-- Creates a server.  opts: host, port, tls_context (a luaossl SSL
-- context, or nil for plain http), handler(request) -> response,
-- log_error(message) and on_accept(peer), which may return "reset" to
-- close a new connection before reading from it.  See read_request for
-- the request fields and send_response for the response fields.
function _M.new(opts)
    local self = setmetatable({
        host = opts.host,
        port = opts.port or 0,
        tls_context = opts.tls_context,
        handler = opts.handler,
        log_error = opts.log_error or function() end,
        on_accept = opts.on_accept,
        connections = 0,
    }, mt)
    return self
end

-- Binds and listens.  Returns the bound port, or nil and a message.
function _M:listen()
    local ok, listener = pcall(socket.listen, {
        host = self.host,
        port = self.port,
        reuseaddr = true,
        nodelay = true,
    })
    if not ok or not listener then
        return nil, "cannot listen on " .. tostring(self.host) .. " port "
            .. tostring(self.port) .. ": " .. tostring(listener)
    end
    listener:onerror(return_error)
    local bound, err = listener:listen()
    if not bound then
        listener:close()
        return nil, "cannot listen on " .. tostring(self.host) .. " port "
            .. tostring(self.port) .. ": " .. describe_error(err)
    end
    local _, address, port = listener:localname()
    local loopback = address and util.loopback_address(address)
    if not loopback then
        listener:close()
        return nil, "the socket is bound to " .. tostring(address)
            .. ", which is not a loopback address"
    end
    self.listener = listener
    self.port = port
    return port
end

function _M:close()
    if self.listener then
        self.listener:close()
        self.listener = nil
    end
end

local function error_response(status, message)
    local body = '{"code":"INVALID_REQUEST","message":"' .. message .. '"}'
    return {
        status = status,
        headers = { { "Content-Type", "application/json" } },
        body = body,
        close = true,
    }
end

-- Parses the request line and the header lines.  Returns the request
-- or nil, a status and a message.
local function parse_head(head)
    local line_end = head:find("\r?\n") or #head + 1
    local request_line = head:sub(1, line_end - 1)
    local method, target, major, minor =
        request_line:match("^([%w!#$%%&'*+.^_`|~-]+) (%S+) HTTP/(%d)%.(%d)$")
    if not method then
        return nil, 400, "malformed request line"
    end
    if major ~= "1" then
        return nil, 505, "only HTTP/1.0 and HTTP/1.1 are served"
    end
    if target:sub(1, 1) ~= "/" then
        return nil, 400, "the request target must be a path starting with /"
    end

    local headers = {}
    local count = 0
    for line in head:sub(line_end):gmatch("[^\r\n]+") do
        count = count + 1
        if count > MAX_HEADER_LINES then
            return nil, 431, "more than " .. MAX_HEADER_LINES .. " header lines"
        end
        local name, value = line:match("^([%w!#$%%&'*+.^_`|~-]+):[ \t]*(.-)[ \t]*$")
        if not name then
            return nil, 400, "malformed header line"
        end
        name = name:lower()
        local previous = headers[name]
        headers[name] = previous and (previous .. ", " .. value) or value
    end

    local path, query = target:match("^([^?]*)%?(.*)$")
    return {
        method = method,
        target = target,
        path = path or target,
        query = query,
        version = major .. "." .. minor,
        headers = headers,
    }
end

-- Decides whether the connection stays open after this request.
local function wants_keep_alive(request)
    local connection = (request.headers["connection"] or ""):lower()
    if request.version == "1.0" then
        return connection:find("keep-alive", 1, true) ~= nil
    end
    return not connection:find("close", 1, true)
end

local function read_more(con, timeout)
    local data, err = con:xread(-READ_CHUNK, "b", timeout)
    if data then
        return data
    end
    return nil, err
end

-- Reads the body of length bytes; buffer contains what already arrived.
-- Returns the body and the bytes after it, or nil and an error.
local function read_body(con, buffer, length)
    if #buffer >= length then
        return buffer:sub(1, length), buffer:sub(length + 1)
    end
    local parts = { buffer }
    local have = #buffer
    while have < length do
        local data, err = read_more(con, REQUEST_TIMEOUT)
        if not data then
            return nil, err or "the peer closed the connection inside a request body"
        end
        parts[#parts + 1] = data
        have = have + #data
    end
    local all = concat(parts)
    return all:sub(1, length), all:sub(length + 1)
end

-- Reads one request from the connection.  buffer contains bytes already
-- received after the previous request.  Returns one of three results:
--   request, rest of the buffer     a complete request;
--   nil, nil, message?              the connection ended or failed;
--   nil, error_response, message    the request is invalid.
--
-- A request has method, target (raw, as received), path, query (raw,
-- or nil), version ("1.0" or "1.1"), headers (lower-case names; repeated
-- headers joined with ", "), body (raw bytes) and keep_alive.
local function read_request(con, buffer)
    local head_end, body_start
    while true do
        buffer = buffer:gsub("^\r?\n", "")
        head_end, body_start = buffer:find("\r?\n\r?\n")
        if head_end then
            break
        end
        if buffer:byte(1) == 0x16 then
            -- 0x16 starts a TLS handshake record and no HTTP method.
            return nil, nil, "a TLS handshake arrived on a plain http port; use http:// or"
                .. " start the sandbox with --tls"
        end
        if #buffer > MAX_HEAD_BYTES then
            return nil, error_response(431, "request head exceeds "
                .. MAX_HEAD_BYTES .. " bytes"), "request head too large"
        end
        local data, err = read_more(con, #buffer == 0 and IDLE_TIMEOUT or REQUEST_TIMEOUT)
        if not data then
            if #buffer == 0 then
                return nil, nil, err and describe_error(err)
            end
            return nil, nil, "the connection ended inside a request head: "
                .. describe_error(err or "end of stream")
        end
        buffer = buffer .. data
    end
    if head_end > MAX_HEAD_BYTES then
        return nil, error_response(431, "request head exceeds " .. MAX_HEAD_BYTES
            .. " bytes"), "request head too large"
    end

    local request, status, message = parse_head(buffer:sub(1, head_end - 1))
    if not request then
        return nil, error_response(status, message), message
    end
    buffer = buffer:sub(body_start + 1)

    if request.headers["transfer-encoding"] then
        return nil, error_response(411, "Transfer-Encoding is not supported;"
            .. " send the body with Content-Length"), "request with Transfer-Encoding"
    end
    local length_text = request.headers["content-length"] or "0"
    local length = length_text:match("^%d+$") and math.tointeger(tonumber(length_text))
    if not length then
        return nil, error_response(400, "invalid Content-Length"), "invalid Content-Length"
    end
    if length > MAX_BODY_BYTES then
        return nil, error_response(413, "request body exceeds " .. MAX_BODY_BYTES
            .. " bytes"), "request body too large"
    end
    if length > #buffer and (request.headers["expect"] or ""):lower() == "100-continue" then
        con:xwrite("HTTP/1.1 100 Continue\r\n\r\n", "bn", WRITE_TIMEOUT)
    end

    local body, rest = read_body(con, buffer, length)
    if not body then
        return nil, nil, describe_error(rest)
    end
    request.body = body
    request.keep_alive = wants_keep_alive(request)
    return request, rest
end

-- Keeps a connection open without a response until the peer closes it
-- or the connection fails.  Whatever the peer sends is discarded.
local function hold_open(con)
    while true do
        local data, err = con:xread(-READ_CHUNK, "b", IDLE_TIMEOUT)
        if not data and err ~= errno.ETIMEDOUT then
            return
        end
    end
end

-- Writes a response.  response: status, headers (an array of
-- { name, value }), body, close (end the connection afterwards),
-- action ("reset": close without a response; "hang": never respond;
-- "truncate": send declared_length as Content-Length, then close).
-- Returns true when the connection may serve another request.
local function send_response(con, request, response)
    if response.action == "reset" then
        return false
    end
    if response.action == "hang" then
        hold_open(con)
        return false
    end

    local status = response.status
    local body = response.body or ""
    local keep_alive = request and request.keep_alive and not response.close
        and response.action ~= "truncate"
    local lines = { "HTTP/1.1 " .. status .. " " .. (REASONS[status] or "Unknown") }
    lines[#lines + 1] = "Date: " .. util.http_date(os.time())
    for _, header in ipairs(response.headers or {}) do
        lines[#lines + 1] = header[1] .. ": " .. header[2]
    end
    if status ~= 204 and status ~= 304 then
        lines[#lines + 1] = "Content-Length: " .. (response.declared_length or #body)
    end
    if not keep_alive then
        lines[#lines + 1] = "Connection: close"
    end
    lines[#lines + 1] = ""
    if request and request.method == "HEAD" then
        body = ""
    end
    lines[#lines + 1] = body
    local ok = con:xwrite(concat(lines, "\r\n"), "bn", WRITE_TIMEOUT)
    return ok ~= nil and keep_alive
end

local function peer_name(con)
    local _, address, port = con:peername()
    if address and address:find(":", 1, true) then
        return "[" .. address .. "]:" .. tostring(port)
    end
    return tostring(address) .. ":" .. tostring(port)
end

function _M:handle_request(request)
    local ok, response = pcall(self.handler, request)
    if ok and type(response) == "table" then
        return response
    end
    self.log_error("request handler failed for " .. request.method .. " " .. request.path
        .. ": " .. tostring(response))
    return error_response(500, "the sandbox failed to handle the request;"
        .. " see its log")
end

function _M:serve_connection(con)
    con:onerror(return_error)
    con:setmode("b", "bn")
    local peer = peer_name(con)
    if self.on_accept and self.on_accept(peer) == "reset" then
        return
    end
    if self.tls_context then
        local ok, err = con:starttls(self.tls_context, HANDSHAKE_TIMEOUT)
        if not ok then
            self.log_error("TLS handshake with " .. peer .. " failed: " .. describe_error(err))
            return
        end
    end

    local buffer = ""
    while true do
        local request, rest, message = read_request(con, buffer)
        if not request then
            if rest then
                self.log_error("rejected a request from " .. peer .. ": " .. message)
                send_response(con, nil, rest)
            elseif message then
                self.log_error("connection from " .. peer .. " failed: " .. message)
            end
            return
        end
        request.peer = peer
        request.received_at = monotime()
        if not send_response(con, request, self:handle_request(request)) then
            return
        end
        buffer = rest
    end
end

-- Accepts connections until close() and serves each in a coroutine of
-- the controller cq.
function _M:attach(cq)
    cq:wrap(function()
        while self.listener do
            local con, err = self.listener:accept(nil, 1)
            if con then
                if self.connections >= MAX_CONNECTIONS then
                    self.log_error("rejected a connection: " .. MAX_CONNECTIONS
                        .. " connections are open")
                    con:close()
                else
                    self.connections = self.connections + 1
                    cq:wrap(function()
                        local ok, failure = pcall(self.serve_connection, self, con)
                        if not ok then
                            self.log_error("connection failed: " .. tostring(failure))
                        end
                        con:close()
                        self.connections = self.connections - 1
                    end)
                end
            elseif err ~= errno.ETIMEDOUT and self.listener then
                self.log_error("accept failed: " .. describe_error(err))
                cqueues.sleep(0.1)
            end
        end
    end)
end

return _M
