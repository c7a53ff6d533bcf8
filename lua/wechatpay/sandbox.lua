-- The bundled sandbox: a local emulator of the WeChat Pay APIv3
-- platform for the smartguide endpoints and /v3/certificates, with an
-- unsigned control API under /sandbox/ that also rotates the platform
-- certificates and sends callbacks.  It listens on loopback only and
-- sends callbacks only to loopback addresses.
--
--   local sandbox = require("wechatpay.sandbox")
--   local sb = assert(sandbox.new({ mode = "both" }))
--   assert(sb:listen())
--   assert(sb:write_configuration("/tmp/sandbox"))
--   sb:run()            -- until sb:stop()
--
-- The modules under wechatpay/sandbox/ hold the parts: http_server
-- (HTTP/1.1 on cqueues), keys, state, platform (checks and signed
-- responses), smartguide and certificates (endpoints), faults, control,
-- notify (callbacks) and http_client (which sends them).
local cqueues = require("cqueues")
local core = require("wechatpay.core")
local openssl_pkey = require("openssl.pkey")
local openssl_x509 = require("openssl.x509")
local ssl_context = require("openssl.ssl.context")
local certificates = require("wechatpay.sandbox.certificates")
local control = require("wechatpay.sandbox.control")
local faults = require("wechatpay.sandbox.faults")
local http_server = require("wechatpay.sandbox.http_server")
local keys = require("wechatpay.sandbox.keys")
local platform = require("wechatpay.sandbox.platform")
local smartguide = require("wechatpay.sandbox.smartguide")
local state = require("wechatpay.sandbox.state")
local util = require("wechatpay.sandbox.util")

local monotime = cqueues.monotime

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local MODES = { certificate = true, public_key = true, both = true }
-- At most this many error lines per second reach the log; the rest are
-- counted and reported in one line.
local MAX_ERROR_LINES_PER_SECOND = 20
local MAX_LOGGED_PATH = 200

local function default_log(line)
    io.stdout:write(line, "\n")
    io.stdout:flush()
end

-- Checks and copies the options.  Returns the copy or nil and a message.
local function check_options(opts)
    local o = {
        host = opts.host or "127.0.0.1",
        port = opts.port or 0,
        mode = opts.mode or "certificate",
        mchid = opts.mchid or "1900000109",
        store_ids = opts.store_ids or { 1234 },
        tls = opts.tls and true or false,
        quiet = opts.quiet and true or false,
        log = opts.log or default_log,
        platform_not_after = opts.platform_not_after,
    }
    local address, err = util.loopback_address(o.host)
    if not address then
        return nil, err
    end
    o.address = address
    if math.type(o.port) ~= "integer" or o.port < 0 or o.port > 65535 then
        return nil, "port must be an integer from 0 to 65535"
    end
    if not MODES[o.mode] then
        return nil, "mode must be certificate, public_key or both, not " .. tostring(o.mode)
    end
    if type(o.mchid) ~= "string" or not o.mchid:match("^%d+$") or #o.mchid > 32 then
        return nil, "mchid must be 1 to 32 decimal digits"
    end
    for _, id in ipairs(o.store_ids) do
        if math.type(id) ~= "integer" or id < 0 then
            return nil, "store IDs must be non-negative integers"
        end
    end
    -- The first platform certificate is valid from a day ago.
    local earliest = os.time() - 86400 + 1
    local not_after = o.platform_not_after
    if not_after ~= nil and (math.type(not_after) ~= "integer" or not_after < earliest
        or not_after > keys.MAX_CERTIFICATE_TIME) then
        return nil, "platform_not_after must be Unix seconds from " .. earliest .. " (a day"
            .. " ago) to " .. keys.MAX_CERTIFICATE_TIME .. ", not " .. tostring(not_after)
    end
    return o
end

local function new_tls_context(identity)
    local context = ssl_context.new("TLS", true)
    context:setCertificate(openssl_x509.new(identity.certificate_pem))
    context:setPrivateKey(openssl_pkey.new(identity.key_pem))
    return context
end

-- Creates a sandbox and generates its keys (about a second).  opts:
-- host (a loopback address, default 127.0.0.1), port (0 = any free
-- port), mode ("certificate", "public_key" or "both"), mchid, store_ids
-- (array of integers), tls (serve https with a test CA), quiet (no line
-- per request or callback), log (function(line); default stdout),
-- platform_not_after (the expiry of the first platform certificate in
-- Unix seconds; default five years from now).  Returns the sandbox or
-- nil and a message.
function _M.new(opts)
    local o, err = check_options(opts or {})
    if not o then
        return nil, err
    end
    local self = setmetatable({ options = o, log = o.log, error_budget = {} }, mt)
    self.keys, err = keys.generate({ mode = o.mode, tls = o.tls, mchid = o.mchid,
        platform_not_after = o.platform_not_after })
    if not self.keys then
        return nil, err
    end
    self.state = state.new(o.store_ids)
    self.faults = faults.new()
    self.platform = platform.new({ keys = self.keys, state = self.state,
        faults = self.faults, mchid = o.mchid,
        log_error = function(message)
            self:log_error(message)
        end })
    smartguide.install(self.platform)
    certificates.install(self.platform)
    self.control = control.new({ state = self.state, faults = self.faults, keys = self.keys,
        log = function(line)
            if not o.quiet then
                self.log(line)
            end
        end })

    self.cq = cqueues.new()
    self.server = http_server.new({
        host = o.address,
        port = o.port,
        tls_context = o.tls and new_tls_context(self.keys.tls) or nil,
        handler = function(request)
            return self:dispatch(request)
        end,
        log_error = function(message)
            self:log_error(message)
        end,
        on_accept = function(peer)
            return self:accept_connection(peer)
        end,
    })
    return self
end

-- Logs an error line, at most MAX_ERROR_LINES_PER_SECOND a second.
function _M:log_error(message)
    local budget = self.error_budget
    local second = os.time()
    if budget.second ~= second then
        if (budget.suppressed or 0) > 0 then
            self.log("sandbox: error: " .. budget.suppressed .. " more errors in the previous"
                .. " second were not logged")
        end
        budget.second, budget.count, budget.suppressed = second, 0, 0
    end
    budget.count = budget.count + 1
    if budget.count > MAX_ERROR_LINES_PER_SECOND then
        budget.suppressed = budget.suppressed + 1
        return
    end
    self.log("sandbox: error: " .. message)
end

-- Logs one line per request: time, method, path (no query), status and
-- duration.  Headers, bodies and keys are never logged.
function _M:log_request(request, response)
    if self.options.quiet then
        return
    end
    local path = util.printable(request.path)
    if #path > MAX_LOGGED_PATH then
        path = path:sub(1, MAX_LOGGED_PATH) .. "..."
    end
    local outcome = response.action or tostring(response.status)
    self.log(string.format("%s %s %s %s %.1f ms", os.date("!%Y-%m-%dT%H:%M:%SZ"),
        util.printable(request.method), path, outcome,
        (monotime() - request.received_at) * 1000))
end

-- Applies an armed connection fault to a new connection from peer.
-- Returns "reset" when the connection must close unread.
function _M:accept_connection(peer)
    local fault = self.faults:take_connection()
    if not fault then
        return nil
    end
    if not self.options.quiet then
        self.log(string.format("%s connection from %s closed unread (fault %s)",
            os.date("!%Y-%m-%dT%H:%M:%SZ"), peer, fault.name))
    end
    return "reset"
end

-- Routes a request: /v3/ to the platform, /sandbox/ to the control API.
function _M:dispatch(request)
    local response
    local path = request.path
    if path:sub(1, 4) == "/v3/" then
        response = self.platform:handle(request)
    elseif path:sub(1, 9) == "/sandbox/" then
        response = self.control:handle(request)
    else
        response = {
            status = 404,
            headers = { { "Content-Type", "application/json" } },
            body = '{"code":"NOT_FOUND","message":"the sandbox serves /v3/ and /sandbox/ only"}',
        }
    end
    self:log_request(request, response)
    return response
end

-- Binds the socket.  Returns the base URL, or nil and a message.
function _M:listen()
    local port, err = self.server:listen()
    if not port then
        return nil, err
    end
    self.port = port
    return self:base_url()
end

function _M:base_url()
    if self.options.tls then
        return "https://localhost:" .. self.port
    end
    local host = self.options.address
    if host:find(":", 1, true) then
        host = "[" .. host .. "]"
    end
    return "http://" .. host .. ":" .. self.port
end

-- Returns the contents of sandbox.json, given the key file paths.
function _M:configuration(paths)
    local k = self.keys
    return {
        base_url = self:base_url(),
        mchid = self.options.mchid,
        serial_no = k.merchant.serial,
        private_key_file = paths.private_key_file,
        certificate_file = paths.certificate_file,
        apiv3_key = k.apiv3_key,
        public_key_file = paths.public_key_file,
        public_key_id = k.wechatpay_public_key.id,
        platform_serial = k.initial_certificate.serial,
        mode = self.options.mode,
        ca_file = paths.ca_file,
    }
end

-- Writes the key files into dir, then sandbox.json (mode 0600, since it
-- contains the APIv3 key, and through a rename, so that a reader never
-- sees it half written).  Call after listen().
-- Returns the path of sandbox.json, or nil and a message.
function _M:write_configuration(dir)
    assert(self.port, "write_configuration needs listen() first")
    local paths, err = self.keys:write_files(dir)
    if not paths then
        return nil, err
    end
    local text = assert(core.json_encode(self:configuration(paths)))
    local path = dir .. "/sandbox.json"
    local ok
    ok, err = util.write_file_atomic(path, text .. "\n", true)
    if not ok then
        return nil, err
    end
    self.configuration_path = path
    return path
end

-- Runs fn in a coroutine of the sandbox's event loop.
function _M:spawn(fn)
    self.cq:wrap(fn)
end

-- Serves until stop().
function _M:run()
    self.server:attach(self.cq)
    while not self.stopped do
        local ok, err = self.cq:step(1)
        if not ok then
            self:log_error("event loop: " .. tostring(err))
        end
    end
    self.server:close()
end

function _M:stop()
    self.stopped = true
    self.server:close()
end

return _M
