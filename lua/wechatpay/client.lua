-- The APIv3 client: configuration, and the path every call takes:
-- encode, sign, send, verify, decode, and map errors.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")
local keystore = require("wechatpay.keystore")
local retry = require("wechatpay.retry")
local validate = require("wechatpay.validate")

local error = error
local floor = math.floor
local ipairs = ipairs
local os_time = os.time
local pairs = pairs
local select = select
local setmetatable = setmetatable
local sort = table.sort
local tostring = tostring
local type = type
local concat = table.concat
local format = string.format

local _M = { _VERSION = core.VERSION }

local mt = { __index = _M }

local DEFAULT_BASE_URL = "https://api.mch.weixin.qq.com"

-- Options wechatpay.new accepts; anything else is a config error, so
-- that a misspelt option is not silently ignored.
local OPTIONS = {
    mchid = true, serial_no = true,
    private_key = true, private_key_file = true,
    apiv3_key = true,
    public_key = true, public_key_file = true, public_key_id = true,
    base_url = true, timeout = true, connect_timeout = true,
    max_response_size = true, ca_file = true, sub_mchid = true, proxy = true,
    clock = true, transport = true, sleep = true, refresh_interval = true,
    platform_certificates = true, platform_certificate_files = true,
    deadline = true, retries = true, retry_delay = true, retry_max_delay = true,
    backup_base_url = true, log = true,
}

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }

local config_error = errors.config
local number_option = validate.number_option

-- Names a path in a message only when it is plainly a path: short, with
-- a '/' or '.', no space or control character, and not base64 (a line
-- of a PEM key can hold '/').  Anything else may be a key given where
-- its file belongs, and is never repeated.
local function describe_path(path)
    local base64 = #path >= 16 and path:match("^[A-Za-z0-9+/=]+$")
        and path:find("%u") and path:find("%l") and path:find("%d")
    if #path <= 200 and path:find("[/.]") and not path:find("[%s%c]") and not base64 then
        return path
    end
    return format("the path given (%d bytes)", #path)
end

-- Reads a key or certificate file.
local function read_file(field, path)
    if type(path) ~= "string" then
        return config_error(field, "must be a file path, got " .. type(path))
    end
    if path:find("-----BEGIN", 1, true) or path:find("[%c]") or #path > 4096 then
        return config_error(field, "must be a file path; this looks like PEM text, "
            .. "which goes in the option without _file")
    end
    local name = describe_path(path)
    local f, err = io.open(path, "rb")
    if not f then
        -- io.open's message starts with the path; keep only the reason.
        local reason = err:sub(1, #path + 2) == path .. ": " and err:sub(#path + 3) or err
        local hint = name == path and "" or "; if that is a key, give it in the option "
            .. "without _file"
        return config_error(field, format("cannot read %s: %s%s", name, reason, hint))
    end
    local data = f:read("a")
    f:close()
    if data == nil then
        return config_error(field, format("cannot read %s: not a regular file", name))
    end
    return data
end

-- Returns the PEM text of option name, given inline or as name_file.
local function pem_option(opts, name)
    local inline = opts[name]
    local path = opts[name .. "_file"]
    if inline ~= nil and path ~= nil then
        return config_error(name, "give either " .. name .. " or " .. name .. "_file, not both")
    end
    if path ~= nil then
        return read_file(name .. "_file", path)
    end
    if inline ~= nil and type(inline) ~= "string" then
        return config_error(name, "must be a PEM string, got " .. type(inline))
    end
    return inline
end

-- Checks a short identifier such as mchid that goes into a header.
local function identifier(opts, name, required)
    local value = opts[name]
    if value == nil and not required then
        return nil
    end
    if type(value) ~= "string" or value == "" then
        return config_error(name, "must be a non-empty string")
    end
    if #value > 64 or value:find("[%c\"\\ ]") then
        return config_error(name, "must be at most 64 characters, without spaces, "
            .. "quotes, backslashes or control characters")
    end
    return value
end

-- Checks base_url (or backup_base_url): https, or http on a loopback
-- host (the sandbox); no path, query or user name.
local function base_url_option(value, name)
    name = name or "base_url"
    if value == nil then
        return name == "base_url" and DEFAULT_BASE_URL or nil
    end
    if type(value) ~= "string" then
        return config_error(name, "must be a string")
    end
    local url = value:gsub("/+$", "")
    local scheme, host = url:match("^(https?)://([^/?#@%s%c]+)$")
    local port = host and (host:match("^%[.*%]:(.*)$") or host:match("^[^%[:]*:(.*)$"))
    if not scheme or (port and not port:match("^%d+$")) then
        -- A value without "://" may be anything, a key among them: not shown.
        local shown = value:find("://", 1, true) and format(", got %q", value:sub(1, 100))
            or ""
        return config_error(name, "must look like https://host[:port]" .. shown)
    end
    local hostname = host:match("^%[(.*)%]") or host:match("^[^:]+")
    local loopback = hostname == "localhost" or hostname == "::1"
        or (hostname and hostname:match("^127%.%d+%.%d+%.%d+$") ~= nil)
    if scheme == "http" and not loopback then
        return config_error(name, "must use https; plain http is allowed only "
            .. "on a loopback address, for the sandbox")
    end
    return url
end

-- Checks the proxy URL.  Without this option no proxy is used, whatever
-- http_proxy and the like say.
local function proxy_option(value)
    if value == nil then
        return nil
    end
    if type(value) ~= "string" or not value:match("^%a[%w+.-]*://[^%s]+$") then
        return config_error("proxy", "must be a proxy URL such as http://127.0.0.1:3128")
    end
    return value
end

local function load_private_key(opts)
    local pem, err = pem_option(opts, "private_key")
    if err then
        return nil, err
    end
    if not pem then
        return config_error("private_key", "is required (or private_key_file)")
    end
    local key, why = core.load_private_key(pem)
    if not key then
        return config_error(opts.private_key_file and "private_key_file" or "private_key", why)
    end
    return key
end

-- Loads platform certificates given in the options, as PEM text or files.
local function load_certificates(opts)
    local list = {}
    for _, name in ipairs({ "platform_certificates", "platform_certificate_files" }) do
        local given = opts[name]
        if given ~= nil and type(given) ~= "table" then
            return config_error(name, "must be a list")
        end
        for i, item in ipairs(given or {}) do
            local field = format("%s[%d]", name, i)
            local pem, err = item, nil
            if name == "platform_certificate_files" then
                pem, err = read_file(field, item)
            elseif type(item) ~= "string" then
                err = select(2, config_error(field, "must be PEM text"))
            end
            if err then
                return nil, err
            end
            local cert, why = core.load_certificate(pem)
            if not cert then
                return config_error(field, why)
            end
            list[#list + 1] = cert
        end
    end
    return list
end

-- Loads the verification keys: the public key, the APIv3 key and the
-- platform certificates given in the options.
local function load_keystore(opts, clock)
    local pem, err = pem_option(opts, "public_key")
    if err then
        return nil, err
    end
    local public_key, public_key_id
    if pem then
        public_key_id, err = identifier(opts, "public_key_id", true)
        if err then
            return nil, err
        end
        local why
        public_key, why = core.load_public_key(pem)
        if not public_key then
            return config_error(opts.public_key_file and "public_key_file" or "public_key", why)
        end
    elseif opts.public_key_id ~= nil then
        return config_error("public_key_id", "is set but public_key (or public_key_file) is not")
    end

    local apiv3_key
    if opts.apiv3_key ~= nil then
        if type(opts.apiv3_key) ~= "string" or #opts.apiv3_key ~= 32 then
            return config_error("apiv3_key", format("must be the 32-byte APIv3 key set in the "
                .. "merchant platform, got %s", type(opts.apiv3_key) == "string"
                and #opts.apiv3_key .. " bytes" or type(opts.apiv3_key)))
        end
        apiv3_key = assert(core.new_aead_key(opts.apiv3_key))
    end

    local certificates
    certificates, err = load_certificates(opts)
    if err then
        return nil, err
    end

    if not public_key and not apiv3_key and #certificates == 0 then
        return config_error("apiv3_key", "configure apiv3_key (platform certificates) or "
            .. "public_key and public_key_id (WeChat Pay public key), or both")
    end
    local refresh_interval
    refresh_interval, err = number_option(opts, "refresh_interval",
        keystore.DEFAULT_REFRESH_INTERVAL, 60, 30 * 86400)
    if err then
        return nil, err
    end
    if opts.sleep ~= nil and type(opts.sleep) ~= "function" then
        return config_error("sleep", "must be a function(seconds)")
    end
    return keystore.new({
        public_key = public_key,
        public_key_id = public_key_id,
        apiv3_key = apiv3_key,
        certificates = certificates,
        clock = clock,
        refresh_interval = refresh_interval,
        sleep = opts.sleep,
        wait_limit = opts.timeout,
        log = opts.log,
    })
end

local function user_agent()
    return format("lua-wechatpay/%s (%s) %s curl/%s", core.VERSION, core.system(),
        _VERSION:gsub(" ", "/"), core.curl_version())
end

local function check_options(opts)
    for key in pairs(opts) do
        if not OPTIONS[key] then
            -- An option name is shown only when it looks like one.
            local name = type(key) == "string" and #key <= 40 and key:match("^[%a_][%w_]*$")
            return config_error(name or "option", name and "unknown option"
                or "an unknown option whose name is not shown")
        end
    end
    if opts.clock ~= nil and type(opts.clock) ~= "function" then
        return config_error("clock", "must be a function returning Unix seconds")
    end
    if opts.transport ~= nil and type(opts.transport) ~= "function" then
        return config_error("transport", "must be a function(request) returning a response")
    end
    if opts.log ~= nil and type(opts.log) ~= "function" then
        return config_error("log", "must be a function(level, message)")
    end
    return true
end

-- Wraps a user-supplied transport function as a transport object.
local function custom_transport(fn)
    return {
        send = function(_, req)
            local res, err = fn(req)
            if res then
                return res
            end
            if errors.is_error(err) then
                return nil, err
            end
            return nil, errors.new("network", format("%s %s: %s", req.method, req.url,
                tostring(err)), { reason = "other" })
        end,
        close = function() end,
    }
end

local function make_transport(opts, runtime)
    if opts.transport then
        return custom_transport(opts.transport)
    end
    if runtime and runtime.transport then
        return runtime.transport(opts)
    end
    return require("wechatpay.transport.curl").new({
        timeout = opts.timeout,
        connect_timeout = opts.connect_timeout,
        max_response_size = opts.max_response_size,
        user_agent = user_agent(),
        ca_file = opts.ca_file,
        proxy = opts.proxy,
    })
end

-- Builds a client from opts (see the README for each option).  Returns
-- the client, or nil and a config error.  Raises when opts is not a table.
-- runtime is for resty.wechatpay: runtime.transport(settings) builds the
-- default transport in place of libcurl's, from the checked timeout,
-- connect_timeout, max_response_size, ca_file and proxy.
function _M.new(opts, runtime)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
    end
    local ok, err = check_options(opts)
    if not ok then
        return nil, err
    end

    local self = {
        clock = opts.clock or os_time,
        sleep = opts.sleep or core.sleep,
        log = opts.log,
    }
    local steps = {
        { "mchid", function() return identifier(opts, "mchid", true) end },
        { "serial_no", function() return identifier(opts, "serial_no", true) end },
        { "sub_mchid", function() return identifier(opts, "sub_mchid", false) end },
        { "base_url", function() return base_url_option(opts.base_url) end },
        { "timeout", function() return number_option(opts, "timeout", 10, 0.001, 86400) end },
        { "deadline", function() return number_option(opts, "deadline", 30, 0.001, 86400) end },
        { "retries", function()
            return number_option(opts, "retries", retry.DEFAULT_RETRIES, 0, 10, true) end },
        { "retry_delay", function()
            return number_option(opts, "retry_delay", retry.DEFAULT_DELAY, 0, 60) end },
        { "retry_max_delay", function()
            return number_option(opts, "retry_max_delay", retry.DEFAULT_MAX_DELAY, 0, 600) end },
        { "backup_base_url", function()
            return base_url_option(opts.backup_base_url, "backup_base_url") end },
        { "connect_timeout", function()
            return number_option(opts, "connect_timeout", 5, 0.001, 86400) end },
        { "max_response_size", function()
            return number_option(opts, "max_response_size", 1024 * 1024, 1, 1024 ^ 3, true)
        end },
        { "proxy", function() return proxy_option(opts.proxy) end },
        { "private_key", function() return load_private_key(opts) end },
        { "keys", function() return load_keystore(opts, self.clock) end },
    }
    for _, step in ipairs(steps) do
        local value, step_err = step[2]()
        if step_err then
            return nil, step_err
        end
        self[step[1]] = value
    end
    self.connect_timeout = math.min(self.connect_timeout, self.timeout)
    if opts.ca_file ~= nil then
        local _, ca_err = read_file("ca_file", opts.ca_file)
        if ca_err then
            return nil, ca_err
        end
    end

    local transport, terr = make_transport({
        timeout = self.timeout,
        connect_timeout = self.connect_timeout,
        max_response_size = self.max_response_size,
        ca_file = opts.ca_file,
        proxy = self.proxy,
        transport = opts.transport,
    }, runtime)
    if not transport then
        return nil, terr
    end
    self.transport = transport
    return setmetatable(self, mt)
end

function mt.__tostring(self)
    local mode
    if self.keys.public_key and self.keys.apiv3_key then
        mode = "public key and platform certificates"
    elseif self.keys.public_key then
        mode = "public key"
    elseif self.keys.apiv3_key then
        mode = "platform certificates"
    else
        mode = "configured platform certificates"
    end
    return format("wechatpay.Client (mchid %s, serial_no %s, %s, %s)", self.mchid,
        self.serial_no, mode, self.base_url)
end

-- Releases the connection and the keys; the client is unusable after.
function _M:close()
    if self.transport then
        self.transport:close()
        self.keys:close()
        self.private_key:close()
        self.transport = nil
    end
end

mt.__close = _M.close
mt.__gc = _M.close

-- {======================================================================
-- Requests
-- =======================================================================

-- Percent-encodes everything but RFC 3986 unreserved characters.
local function percent_encode(s)
    return (s:gsub("[^A-Za-z0-9%-._~]", function(c)
        return format("%%%02X", c:byte())
    end))
end
_M.percent_encode = percent_encode

-- Characters a path or query may hold as they are: what libcurl sends
-- unchanged, so that the signed URL is the URL sent.
local PATH_PATTERN = "^/[A-Za-z0-9%-._~!$&'()*+,;=:@/%%]*$"
local QUERY_PATTERN = "^[A-Za-z0-9%-._~!$&'()*+,;=:@/?%%]*$"

local SCALARS = { string = true, number = true, boolean = true }

-- Builds a query string from a string (sent as is, so already encoded),
-- an array of { name, value } pairs (kept in order) or a table (sorted by
-- name).  Returns the string, or nil and an input error.
local function build_query(query)
    if type(query) == "string" then
        if not query:match(QUERY_PATTERN) then
            return errors.input("query", "must be percent-encoded ASCII without spaces "
                .. "or '#'")
        end
        return query
    end
    if type(query) ~= "table" then
        return errors.input("query", "must be a table or a string, got " .. type(query))
    end
    local pairs_list = {}
    if query[1] ~= nil then
        pairs_list = query
    else
        for k, v in pairs(query) do
            pairs_list[#pairs_list + 1] = { k, v }
        end
        sort(pairs_list, function(a, b) return tostring(a[1]) < tostring(b[1]) end)
    end
    local parts = {}
    for i, pair in ipairs(pairs_list) do
        if type(pair) ~= "table" or not SCALARS[type(pair[1])]
            or not SCALARS[type(pair[2])] then
            return errors.input("query", "names and values must be strings, numbers or "
                .. "booleans")
        end
        parts[i] = percent_encode(tostring(pair[1])) .. "=" .. percent_encode(tostring(pair[2]))
    end
    return concat(parts, "&")
end

-- Checks extra request headers: token names, values without control
-- characters (a CR or LF would start another header), and no
-- Authorization, which the client makes.
local function check_headers(headers)
    for name, value in pairs(headers) do
        if type(name) ~= "string" or not name:match("^[A-Za-z0-9!#$%%&'*+%-.^_`|~]+$") then
            return errors.input("headers", "invalid header name " .. format("%q", tostring(name)))
        end
        if type(value) ~= "string" or value:find("[%z\1-\8\10-\31\127]") then
            return errors.input("headers", "header " .. name .. " must be a string without "
                .. "control characters")
        end
        if name:lower() == "authorization" then
            return errors.input("headers", "Authorization is made by the client")
        end
    end
    return true
end

-- Turns a non-2xx response into an api error, using the platform's
-- { code, message, detail } body when there is one.
local function api_error(res)
    local body = res.body ~= "" and core.json_decode(res.body) or nil
    local fields = {
        status = res.status,
        request_id = res.headers["request-id"],
        retry_after = retry.retry_after(res.headers["retry-after"]),
    }
    local message
    if type(body) == "table" and type(body.code) == "string" then
        fields.code = body.code
        fields.detail = body.detail ~= core.null and body.detail or nil
        message = type(body.message) == "string" and body.message or "(no message)"
    else
        message = format("HTTP %d without an error body", res.status)
        if res.body ~= "" then
            message = format("HTTP %d with a body that is not a platform error: %s",
                res.status, res.body:sub(1, 120):gsub("[%c]", " "))
        end
    end
    return nil, errors.new("api", message, fields)
end

-- Passes a message to the log option, if any.  Messages never carry a
-- key, a signature, an Authorization header or decrypted text.
function _M:_log(level, message)
    if self.log then
        self.log(level, message)
    end
end

-- Returns when a call that starts now must end: its attempts, the waits
-- between them and a certificate download it triggers share the deadline.
function _M:_deadline()
    return core.monotonic() + self.deadline
end

-- Signs and sends one request to base_url; returns the raw response, or
-- nil, err for a network failure or a non-2xx status.  The response is
-- not verified.  idempotent tells the transport whether sending twice is
-- harmless.
function _M:_send(method, base_url, url_path, body, headers, idempotent, deadline)
    if not self.transport then
        return nil, errors.new("config", "the client is closed")
    end
    local left = deadline - core.monotonic()
    if left <= 0 then
        return nil, errors.new("network", format("%s %s: timed out before sending (the "
            .. "call's deadline is %g s)", method, url_path, self.deadline),
            { reason = "timeout", sent = false })
    end
    local auth, err = core.authorization(self.private_key, self.mchid, self.serial_no,
        method, url_path, body or "", floor(self.clock()))
    if not auth then
        return nil, errors.new("input", "cannot sign the request: " .. err)
    end

    local list = {
        "Authorization: " .. auth,
        "Accept: application/json",
    }
    if body then
        list[#list + 1] = "Content-Type: application/json"
    end
    for name, value in pairs(headers or {}) do
        list[#list + 1] = name .. ": " .. value
    end

    local res, send_err = self.transport:send({
        method = method,
        url = base_url .. url_path,
        headers = list,
        body = body,
        timeout = math.min(self.timeout, left),
        idempotent = idempotent,
    })
    if not res then
        return nil, send_err
    end
    if res.status < 200 or res.status > 299 then
        return api_error(res)
    end
    return res
end

-- Sends a request, and again after a failure that retry.decide allows,
-- waiting a back-off between attempts, while the deadline leaves time.
-- Every attempt is signed anew, with a fresh nonce and timestamp.  After
-- a connection failure the remaining attempts go to backup_base_url.
function _M:_send_retrying(method, url_path, body, headers, idempotent, deadline)
    local base_url = self.base_url
    local attempt = 1
    while true do
        local res, err = self:_send(method, base_url, url_path, body, headers, idempotent,
            deadline)
        if res then
            return res
        end
        local decision = attempt <= self.retries and retry.decide(err, idempotent)
        local wait = decision and retry.delay(attempt, self.retry_delay,
            self.retry_max_delay, err)
        if not decision or core.monotonic() + wait >= deadline then
            err.attempts = attempt
            return nil, err
        end
        if decision == "backup" and self.backup_base_url then
            base_url = self.backup_base_url
        end
        self:_log("warn", format("%s %s failed (%s), attempt %d of %d; retrying on %s in "
            .. "%.2f s", method, url_path, err.reason or err.status or err.kind, attempt,
            self.retries + 1, base_url, wait))
        self.sleep(wait)
        attempt = attempt + 1
    end
end

-- Fetches the platform certificates, for the key store.  The public key
-- ID goes in Wechatpay-Serial here too, so that in migration the platform
-- signs the list with the public key.
function _M:_fetch_certificates(deadline)
    local serial = self.keys:default_serial()
    return self:_send_retrying("GET", "/v3/certificates", nil,
        serial and { ["Wechatpay-Serial"] = serial } or nil, true,
        deadline or self:_deadline())
end

-- Returns what the key store calls to download certificates: callable,
-- and carrying the call's deadline, so that a wait for another
-- coroutine's download ends with the call.
local function fetcher(self, deadline)
    return setmetatable({ deadline = deadline }, {
        __call = function()
            return self:_fetch_certificates(deadline)
        end,
    })
end
_M._fetcher = fetcher

local function closed_error()
    return nil, errors.new("config", "the client is closed")
end

-- Returns the serial and key that encrypt sensitive fields now.
function _M:_encryption_key(deadline)
    if not self.transport then
        return closed_error()
    end
    return self.keys:encryption_key(fetcher(self, deadline or self:_deadline()))
end

-- Sends a request and verifies its response.  opts: query, body (a table
-- encoded as JSON, or a JSON string sent as is), serial (the value of
-- Wechatpay-Serial), headers (more headers), idempotent (POST only: true
-- when sending it twice is harmless), deadline (from _deadline).  Returns
-- the response { status, headers, body, data, request_id } or nil and an
-- error.
function _M:_call(method, path, opts)
    local deadline = opts.deadline or self:_deadline()
    local url_path = path
    if opts.query ~= nil then
        local query, qerr = build_query(opts.query)
        if not query then
            return nil, qerr
        end
        if query ~= "" then
            url_path = url_path .. "?" .. query
        end
    end

    local body = opts.body
    if type(body) == "table" then
        local encoded, why = core.json_encode(body)
        if not encoded then
            return nil, errors.new("input", "body: " .. why, { field = "body" })
        end
        body = encoded
    end

    local headers = {}
    for name, value in pairs(opts.headers or {}) do
        headers[name] = value
    end
    local serial = opts.serial or self.keys:default_serial()
    if serial then
        headers["Wechatpay-Serial"] = serial
    end
    local ok, herr = check_headers(headers)
    if not ok then
        return nil, herr
    end

    local idempotent = method ~= "POST" or opts.idempotent == true
    local res, err = self:_send_retrying(method, url_path, body, headers, idempotent,
        deadline)
    if not res then
        return nil, err
    end
    local verr
    ok, verr = self.keys:verify(res, fetcher(self, deadline))
    if not ok then
        return nil, verr
    end
    -- A refresh that is due runs after the answer, with the time left, so
    -- that it never makes the caller's request fail.
    if deadline > core.monotonic() then
        self.keys:refresh_if_due(fetcher(self, deadline))
    end

    res.request_id = res.headers["request-id"]
    if res.body ~= "" then
        local data, why = core.json_decode(res.body)
        if data == nil then
            return nil, errors.new("api", "response body is not valid JSON: " .. why, {
                status = res.status, request_id = res.request_id,
            })
        end
        res.data = data
    end
    return res
end

local REQUEST_OPTIONS = {
    query = true, body = true, headers = true, serial = true, idempotent = true,
}

local function check_request_args(method, path, opts)
    if type(method) ~= "string" then
        error("bad argument #1 to 'request' (string expected, got " .. type(method) .. ")", 3)
    end
    if type(path) ~= "string" then
        error("bad argument #2 to 'request' (string expected, got " .. type(path) .. ")", 3)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("bad argument #3 to 'request' (table expected, got " .. type(opts) .. ")", 3)
    end
end

-- Calls any APIv3 endpoint.  method: GET, POST, PUT, PATCH or DELETE;
-- path: "/v3/...", without a query.  See _call for opts and the result.
function _M:request(method, path, opts)
    check_request_args(method, path, opts)
    opts = opts or {}
    method = method:upper()
    if not METHODS[method] then
        return errors.input("method", "must be GET, POST, PUT, PATCH or DELETE, got " .. method)
    end
    if not path:match(PATH_PATTERN) then
        return errors.input("path", "must start with / and be percent-encoded ASCII, "
            .. "without a query (pass it in opts.query), fragment or spaces")
    end
    if ("/" .. path .. "/"):find("/%.%.?/") then
        return errors.input("path", "must not contain . or .. segments")
    end
    for key in pairs(opts) do
        if not REQUEST_OPTIONS[key] then
            return errors.input(tostring(key), "unknown request option")
        end
    end
    local body = opts.body
    if body ~= nil and type(body) ~= "table" and type(body) ~= "string" then
        return errors.input("body", "must be a table or a JSON string, got " .. type(body))
    end
    if body ~= nil and method == "GET" then
        return errors.input("body", "a GET request has no body")
    end
    if opts.headers ~= nil and type(opts.headers) ~= "table" then
        return errors.input("headers", "must be a table of names and values")
    end
    if opts.serial ~= nil and type(opts.serial) ~= "string" then
        return errors.input("serial", "must be a string")
    end
    return self:_call(method, path, opts)
end

-- Encrypts a sensitive field for a request.  Returns the base64
-- ciphertext and the serial to send in Wechatpay-Serial, or nil, err.
function _M:encrypt(plaintext)
    if type(plaintext) ~= "string" then
        error("bad argument #1 to 'encrypt' (string expected, got " .. type(plaintext) .. ")", 2)
    end
    if not self.transport then
        return nil, errors.new("config", "the client is closed")
    end
    local serial, key = self:_encryption_key()
    if not serial then
        return nil, key
    end
    local cipher, why = key:encrypt(plaintext)
    if not cipher then
        return nil, errors.new("input", why)
    end
    return cipher, serial
end

-- Decrypts a field the platform encrypted with the merchant's key.
function _M:decrypt(ciphertext)
    if type(ciphertext) ~= "string" then
        error("bad argument #1 to 'decrypt' (string expected, got " .. type(ciphertext) .. ")", 2)
    end
    if not self.transport then
        return nil, errors.new("config", "the client is closed")
    end
    local plain, why = self.private_key:decrypt(ciphertext)
    if not plain then
        return nil, errors.new("decrypt", why)
    end
    return plain
end

-- Lists the keys the client verifies with: serial, not_before,
-- not_after (absent for the public key) and source ("public_key",
-- "download" or "config").
function _M:certificates()
    if not self.transport then
        return nil, errors.new("config", "the client is closed")
    end
    return self.keys:list()
end

-- Downloads the platform certificates now.  Returns { added, removed,
-- kept } (lists of serials), or nil and an error; on an error the client
-- keeps the certificates it had.  opts.accept_new_signer trusts a list
-- signed by a certificate it carries, as a first download: for a client
-- that missed a rotation.
function _M:refresh_certificates(opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("bad argument #1 to 'refresh_certificates' (table expected, got "
            .. type(opts) .. ")", 2)
    end
    if not self.transport then
        return closed_error()
    end
    return self.keys:refresh(fetcher(self, self:_deadline()),
        opts and opts.accept_new_signer == true)
end

return _M
