-- lua-wechatpay for OpenResty: the API of require("wechatpay") on
-- ngx_lua cosockets, so that a call yields to nginx's event loop instead
-- of blocking the worker.  No libcurl call is made here: the client gets
-- the cosocket transport (wechatpay/transport/cosocket.lua) in place of
-- libcurl's, waits with ngx.sleep and logs through ngx.log.
--
--   local wechatpay = require("resty.wechatpay")
--   local client, err = wechatpay.new({ mchid = ..., shared_dict = "wechatpay" })
local client = require("wechatpay.client")
local cosocket = require("wechatpay.transport.cosocket")
local errors = require("wechatpay.errors")
local keystore = require("wechatpay.keystore")
local shared_keystore = require("wechatpay.shared_keystore")
local validate = require("wechatpay.validate")
local wechatpay = require("wechatpay")

local ngx = ngx
if type(ngx) ~= "table" or not ngx.socket then
    error("resty.wechatpay runs inside OpenResty or nginx with ngx_lua; "
        .. "use require(\"wechatpay\") elsewhere", 2)
end

local error = error
local format = string.format
local pairs = pairs
local pcall = pcall
local tostring = tostring
local type = type
local config_error = errors.config

local _M = {
    _VERSION = wechatpay._VERSION,
    null = wechatpay.null,
    empty_array = wechatpay.empty_array,
    array_mt = wechatpay.array_mt,
    is_error = wechatpay.is_error,
}

-- Options of new that only OpenResty has; the others are those of
-- require("wechatpay").new.
local RESTY_OPTIONS = { shared_dict = true, pool_size = true, keepalive_timeout = true }

-- Seconds between two runs of the refresh timer.
_M.DEFAULT_TIMER_INTERVAL = 60

local LOG_LEVELS = {
    debug = ngx.DEBUG, info = ngx.INFO, warn = ngx.WARN, error = ngx.ERR,
}

-- The default log option: the messages go to nginx's error log.
local function ngx_log(level, message)
    ngx.log(LOG_LEVELS[level] or ngx.WARN, "wechatpay: ", message)
end

-- Checks the options that differ from the Lua 5.4 module.  Returns the
-- options for wechatpay.client and the OpenResty settings, or nil, err.
local function split_options(opts)
    if opts.ca_file ~= nil then
        return config_error("ca_file", "is not used in OpenResty: set "
            .. "lua_ssl_trusted_certificate in nginx.conf")
    end
    if opts.proxy ~= nil then
        return config_error("proxy", "is not supported in OpenResty: cosockets connect "
            .. "to base_url directly")
    end
    local settings = {}
    local err
    settings.pool_size, err = validate.number_option(opts, "pool_size",
        cosocket.DEFAULT_POOL_SIZE, 1, 100000, true)
    if err then
        return nil, err
    end
    settings.keepalive_timeout, err = validate.number_option(opts, "keepalive_timeout",
        cosocket.DEFAULT_KEEPALIVE_TIMEOUT, 0.001, 86400)
    if err then
        return nil, err
    end
    local name = opts.shared_dict
    if name ~= nil then
        if type(name) ~= "string" then
            return config_error("shared_dict", "must be the name of a lua_shared_dict")
        end
        settings.dict = ngx.shared[name]
        if not settings.dict then
            return config_error("shared_dict", format("no lua_shared_dict named %q in "
                .. "nginx.conf", name))
        end
    end

    local base = {}
    for key, value in pairs(opts) do
        if not RESTY_OPTIONS[key] then
            base[key] = value
        end
    end
    if base.sleep == nil then
        base.sleep = ngx.sleep
    end
    if base.log == nil then
        base.log = ngx_log
    end
    return base, settings
end

-- Builds a client, as require("wechatpay").new does, with these options
-- in addition: shared_dict (the name of a lua_shared_dict that stores the
-- platform certificates for every worker), pool_size and
-- keepalive_timeout (seconds) of the connection pool.  ca_file and proxy
-- are config errors.  Returns the client, or nil and a config error.
function _M.new(opts)
    if type(opts) ~= "table" then
        error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", 2)
    end
    local base, settings = split_options(opts)
    if not base then
        return nil, settings
    end

    local c, err = client.new(base, {
        transport = function(checked)
            return cosocket.new({
                timeout = checked.timeout,
                connect_timeout = checked.connect_timeout,
                max_response_size = checked.max_response_size,
                pool = tostring(opts.mchid),
                pool_size = settings.pool_size,
                keepalive_timeout = settings.keepalive_timeout,
            })
        end,
    })
    if not c then
        return nil, err
    end
    if settings.dict and c.keys.apiv3_key then
        -- A download runs within one call's deadline; the lock outlives
        -- it by a little.
        shared_keystore.attach(c.keys, settings.dict,
            format("wechatpay:%s:%s:", c.mchid, c.base_url), (c.deadline or c.timeout) + 1)
    end
    return c
end

-- Runs one tick of the refresh timer: the first download when nothing has
-- been downloaded yet, else a refresh when refresh_interval has passed.
-- Both keep to one download a minute and, with a shared dict, to one
-- worker at a time.
local function refresh_tick(c)
    local keys = c.keys
    if not c.transport then
        return
    end
    if keys.sync then
        keys:sync()
        keys:sync_attempt()
    end
    if keys.unavailable or keys.downloading then
        return
    end
    local fetch = c._fetcher(c, c:_deadline())
    if keys.last_success ~= nil then
        keys:refresh_if_due(fetch)
        return
    end
    if keys.last_attempt
        and keys.clock() - keys.last_attempt < keystore.MIN_DOWNLOAD_INTERVAL then
        return
    end
    keys.background = true
    keys:download(fetch)
    keys.background = false
end

local function on_timer(premature, c)
    if premature then
        return
    end
    local ok, err = pcall(refresh_tick, c)
    if not ok then
        ngx.log(ngx.ERR, "wechatpay: certificate refresh timer failed: ", tostring(err))
    end
end

-- Starts the certificate refresh in this worker: once now and then every
-- interval seconds (default 60), from ngx.timer, so that requests rarely
-- wait for a download.  Call it from init_worker_by_lua*.  target is a
-- client or the options of one.  A client without apiv3_key has nothing
-- to download: no timer starts for it.  Returns the client, or nil and an
-- error.
function _M.start_refresh_timer(target, interval)
    if type(target) ~= "table" then
        error("bad argument #1 to 'start_refresh_timer' (client or options expected, got "
            .. type(target) .. ")", 2)
    end
    local c, err = target, nil
    if type(target.refresh_certificates) ~= "function" then
        c, err = _M.new(target)
        if not c then
            return nil, err
        end
    end
    interval = interval or _M.DEFAULT_TIMER_INTERVAL
    if type(interval) ~= "number" or interval < 1 or interval > 86400 then
        error("bad argument #2 to 'start_refresh_timer' (seconds from 1 to 86400 expected)",
            2)
    end
    if not c.keys.apiv3_key then
        return c
    end
    local ok, terr = ngx.timer.at(0, on_timer, c)
    if ok then
        ok, terr = ngx.timer.every(interval, on_timer, c)
    end
    if not ok then
        return nil, errors.new("config", "cannot start the refresh timer: " .. tostring(terr))
    end
    return c
end

return _M
