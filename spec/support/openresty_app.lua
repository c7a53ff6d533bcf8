-- The nginx side of spec/openresty_spec.lua.  It builds resty.wechatpay
-- clients for the sandboxes the spec started.  It runs each Lua chunk the
-- spec posts to /run inside a request handler and returns the chunk's
-- result as JSON.
--
-- It also replaces the libcurl entry points of wechatpay.core with
-- functions that count their calls in the "harness" shared dict and
-- fail, so that the spec can check that OpenResty never reaches libcurl.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local _M = {}

local config            -- the decoded harness configuration
local clients = {}      -- name -> client, built in init
local definitions = {}  -- name -> client options, with keys inline

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("*a")
    f:close()
    return data
end

local function spy_on_libcurl()
    for _, name in ipairs({ "new_http", "curl_version" }) do
        core[name] = function()
            ngx.shared.harness:incr("curl_calls", 1, 0)
            error("wechatpay.core." .. name .. " was called inside nginx", 2)
        end
    end
end

-- Client options for a sandbox, with the PEM text inline: workers may
-- not be allowed to read the sandbox's files, the master (running this
-- from init_by_lua) is.
local function sandbox_options(sandbox)
    local opts = {
        mchid = sandbox.mchid,
        serial_no = sandbox.serial_no,
        private_key = read_file(sandbox.private_key_file),
        base_url = sandbox.base_url,
    }
    if sandbox.mode ~= "public_key" then
        opts.apiv3_key = sandbox.apiv3_key
    end
    if sandbox.mode ~= "certificate" then
        opts.public_key = read_file(sandbox.public_key_file)
        opts.public_key_id = sandbox.public_key_id
    end
    return opts
end

-- Runs in init_by_lua: reads the configuration the spec wrote
-- ({ sandboxes = { name = sandbox.json path }, clients = { name =
-- { sandbox, options, timer } } }, where false in options removes an
-- option) and builds the clients.
function _M.init(path)
    spy_on_libcurl()
    config = assert(core.json_decode(read_file(path)))
    local sandboxes = {}
    for name, json_path in pairs(config.sandboxes) do
        sandboxes[name] = assert(core.json_decode(read_file(json_path)))
    end
    config.sandbox_configs = sandboxes
    local wechatpay = require("resty.wechatpay")
    for name, def in pairs(config.clients) do
        local opts = sandbox_options(sandboxes[def.sandbox])
        for key, value in pairs(def.options or {}) do
            opts[key] = value ~= false and value or nil
        end
        definitions[name] = opts
        local c, err = wechatpay.new(opts)
        if not c then
            error("client " .. name .. ": " .. tostring(err))
        end
        clients[name] = c
    end
end

-- Runs in init_worker_by_lua: starts the refresh timers asked for.
function _M.init_worker()
    local wechatpay = require("resty.wechatpay")
    for name, def in pairs(config.clients) do
        if def.timer then
            assert(wechatpay.start_refresh_timer(clients[name], def.timer))
        end
    end
end

-- Copies a value into something JSON can hold: errors become plain
-- tables with their text, functions and userdata their tostring.
local function plain(value, depth)
    local kind = type(value)
    if kind == "table" and value ~= core.null then
        if depth > 8 then
            return "(too deep)"
        end
        local out = {}
        for k, v in pairs(value) do
            if k ~= "client" then
                out[k] = plain(v, depth + 1)
            end
        end
        if errors.is_error(value) then
            out.text = tostring(value)
        end
        return setmetatable(out, getmetatable(value) == core.array_mt and core.array_mt
            or nil)
    elseif kind == "function" or kind == "userdata" or kind == "cdata" then
        return tostring(value)
    end
    return value
end

-- The globals available to a chunk, besides Lua's.
local function chunk_env()
    local wechatpay = require("resty.wechatpay")
    local env = {
        clients = clients,
        wechatpay = wechatpay,
        core = core,
        sandbox = config.sandbox_configs,
        -- A new client with the options of a named one, changed by extra
        -- (false removes an option).
        new_client = function(name, extra)
            local opts = {}
            for k, v in pairs(definitions[name]) do
                opts[k] = v
            end
            for k, v in pairs(extra or {}) do
                opts[k] = v ~= false and v or nil
            end
            return wechatpay.new(opts)
        end,
        fields = function(userid, extra)
            local f = {
                store_id = 1234, corpid = "wwd3ca1b4c1cd9b6a8", userid = userid,
                name = "张三", mobile = "13800138000",
                qr_code = "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=ngx",
                avatar = "https://wx.qlogo.cn/mmopen/ngx/0",
            }
            for k, v in pairs(extra or {}) do
                f[k] = v
            end
            return f
        end,
    }
    return setmetatable(env, { __index = _G })
end

-- Handles /run: the request body is a Lua chunk, and the response is
-- { ok, result, pid } or { ok = false, error, pid } as JSON.
function _M.run()
    ngx.req.read_body()
    local source = ngx.req.get_body_data() or ""
    local answer = { pid = ngx.worker.pid() }
    local chunk, why = loadstring(source, "=chunk")
    if chunk then
        setfenv(chunk, chunk_env())
        local ok, result = pcall(chunk)
        answer.ok = ok
        if ok then
            answer.result = plain(result, 0)
        else
            answer.error = tostring(result)
        end
    else
        answer.ok = false
        answer.error = why
    end
    local body, err = core.json_encode(answer)
    if not body then
        body = core.json_encode({ ok = false, error = "cannot encode the result: " .. err,
            pid = answer.pid })
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Content-Length"] = #body
    ngx.print(body)
end

-- Handles /curl_calls: returns how often the libcurl entry points were
-- called.
function _M.curl_calls()
    ngx.print(ngx.shared.harness:get("curl_calls") or 0)
end

return _M
