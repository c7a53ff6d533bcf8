-- The Lua 5.4 transport: one libcurl handle per client, reused so that
-- its connection stays open between calls.  A call blocks the thread
-- until the response arrives or a timeout passes.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local setmetatable = setmetatable

local _M = {}

local mt = { __index = _M }

-- Creates a transport.  opts: timeout, connect_timeout (seconds),
-- max_response_size (bytes), user_agent, ca_file, proxy.
function _M.new(opts)
    local http, err = core.new_http({
        timeout = opts.timeout,
        connect_timeout = opts.connect_timeout,
        max_response_size = opts.max_response_size,
        user_agent = opts.user_agent,
        ca_file = opts.ca_file,
        proxy = opts.proxy,
    })
    if not http then
        return nil, errors.new("config", "cannot create the HTTP client: " .. err)
    end
    return setmetatable({ http = http }, mt)
end

-- Sends req = { method, url, headers = { "Name: value", ... }, body,
-- timeout (seconds left for this request), idempotent }.  A request that
-- is not idempotent goes on a new connection, because libcurl repeats a
-- request on its own when a reused connection closes without an answer.
-- Returns { status, headers (lower-case names), body } or nil and a
-- network error (errors.network) whose sent field tells whether any of
-- the request went out.
function _M:send(req)
    local res, code, message, sent = self.http:request(req.method, req.url,
        req.headers, req.body, { fresh = not req.idempotent, timeout = req.timeout })
    if res then
        return res
    end
    return nil, errors.network(req, code, message, sent)
end

function _M:close()
    self.http:close()
end

return _M
