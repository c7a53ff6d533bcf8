-- Settings of wechatpay-guide: a configuration file (Lua or JSON),
-- overridden setting by setting by WECHATPAY_* environment variables,
-- and the client built from them.
--
-- The file is config.lua under $XDG_CONFIG_HOME/wechatpay (or
-- ~/.config/wechatpay), or config.json there when config.lua is absent,
-- or the path given with --config or WECHATPAY_CONFIG.  A name ending in
-- .json is read as JSON, and any other as Lua (a table returned, or
-- global assignments) that runs without access to any library.  The
-- sandbox's sandbox.json is such a file.
local lfs = require("lfs")
local json = require("dkjson")
local wechatpay = require("wechatpay")

local _M = {}

-- Every setting: its environment variable and its type.  file_only
-- settings come only from a file.
_M.SETTINGS = {
    mchid = { env = "WECHATPAY_MCHID", type = "string" },
    serial_no = { env = "WECHATPAY_SERIAL_NO", type = "string" },
    private_key_file = { env = "WECHATPAY_PRIVATE_KEY_FILE", type = "path" },
    apiv3_key_file = { env = "WECHATPAY_APIV3_KEY_FILE", type = "path" },
    public_key_file = { env = "WECHATPAY_PUBLIC_KEY_FILE", type = "path" },
    public_key_id = { env = "WECHATPAY_PUBLIC_KEY_ID", type = "string" },
    base_url = { env = "WECHATPAY_BASE_URL", type = "string" },
    sub_mchid = { env = "WECHATPAY_SUB_MCHID", type = "string" },
    ca_file = { env = "WECHATPAY_CA_FILE", type = "path" },
    store_id = { env = "WECHATPAY_STORE_ID", type = "integer" },
    corpid = { env = "WECHATPAY_CORPID", type = "string" },
    timeout = { env = "WECHATPAY_TIMEOUT", type = "number" },
    -- The APIv3 key itself, as sandbox.json carries it.  Every
    -- configuration file must be private, so this is as safe as a key file.
    apiv3_key = { type = "string", file_only = true },
    -- certificate, public_key or both: which of the configured keys the
    -- client uses.  sandbox.json names its mode here.
    mode = { type = "string", file_only = true },
}

-- Settings that sandbox.json carries and the client does not use.
local IGNORED = { certificate_file = true, platform_serial = true }

local MODES = { certificate = true, public_key = true, both = true }

-- Returns the default configuration file path, or nil without a home.
local function default_path(env)
    local base = env("XDG_CONFIG_HOME")
    if not base or base == "" then
        local home = env("HOME")
        if not home or home == "" then
            return nil
        end
        base = home .. "/.config"
    end
    local lua_path = base .. "/wechatpay/config.lua"
    if lfs.attributes(lua_path, "mode") then
        return lua_path
    end
    local json_path = base .. "/wechatpay/config.json"
    if lfs.attributes(json_path, "mode") then
        return json_path
    end
    return lua_path
end

-- Rejects a file that group or others may read or write, because it
-- contains a secret or, for the configuration, sets where requests go.
-- Returns true or nil and a message with the fix.
function _M.check_private(path, description)
    local attributes, err = lfs.attributes(path)
    if not attributes then
        return nil, string.format("%s %s cannot be read: %s", description, path, err)
    end
    local permissions = attributes.permissions
    if permissions:sub(4, 9) ~= "------" then
        return nil, string.format("%s %s can be accessed by group or others (%s); "
            .. "run: chmod 600 %s", description, path, permissions, path)
    end
    return true
end

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("a")
    f:close()
    return data
end

-- Loads a Lua configuration file without access to any library.
-- A syntax error is reported by line only, because the text near it
-- could be part of a key.
local function load_lua(path)
    local env = {}
    local chunk, err = loadfile(path, "t", env)
    if not chunk then
        local line = tostring(err):match(":(%d+):")
        return nil, "syntax error" .. (line and (" on line " .. line) or "")
    end
    local ok, result = pcall(chunk)
    if not ok then
        local line = tostring(result):match(":(%d+):")
        return nil, "error while running it" .. (line and (" on line " .. line) or "")
    end
    if type(result) == "table" then
        return result
    end
    if result ~= nil then
        return nil, "it must return a table or assign settings, not return a " .. type(result)
    end
    return env
end

local function load_json(path)
    local text, err = read_file(path)
    if not text then
        return nil, err
    end
    local value, position, message = json.decode(text)
    if type(value) ~= "table" then
        return nil, "invalid JSON" .. (message and (": " .. message) or "")
            .. (position and (" at byte " .. position) or "")
    end
    return value
end

-- Returns the folder of path, for settings that name files relative to it.
local function folder_of(path)
    return path:match("^(.*)/[^/]*$") or "."
end

-- Converts a value of setting name from a file or the environment.
-- Returns it, or nil and a message.
local function convert(name, value, from_env)
    local kind = _M.SETTINGS[name].type
    if kind == "integer" then
        local n = math.tointeger(from_env and tonumber(value) or value)
        if not n or n < 0 then
            return nil, "must be a non-negative integer"
        end
        return n
    elseif kind == "number" then
        local n = from_env and tonumber(value) or value
        if type(n) ~= "number" or not (n > 0) then
            return nil, "must be a number of seconds greater than 0"
        end
        return n
    end
    if type(value) ~= "string" or value == "" then
        return nil, "must be a non-empty string"
    end
    return value
end

-- Reads a configuration file into settings.  Returns true or nil and a
-- message.
local function read_config_file(path, settings, sources)
    local ok, err = _M.check_private(path, "configuration file")
    if not ok then
        return nil, err
    end
    local values
    if path:match("%.json$") then
        values, err = load_json(path)
    else
        values, err = load_lua(path)
    end
    if not values then
        return nil, string.format("configuration file %s: %s", path, err)
    end
    local dir = folder_of(path)
    for name, value in pairs(values) do
        if not IGNORED[name] then
            if type(name) ~= "string" or not _M.SETTINGS[name] then
                return nil, string.format("configuration file %s: unknown setting %s; see "
                    .. "wechatpay-guide --help for the settings", path, tostring(name))
            end
            local converted, problem = convert(name, value, false)
            if converted == nil then
                return nil, string.format("configuration file %s: %s %s", path, name, problem)
            end
            if _M.SETTINGS[name].type == "path" and not converted:match("^/") then
                converted = dir .. "/" .. converted
            end
            settings[name] = converted
            sources[name] = path
        end
    end
    return true
end

-- Drops the keys that mode does not use.
local function apply_mode(settings, sources)
    local mode = settings.mode
    if mode == nil then
        return true
    end
    if not MODES[mode] then
        return nil, string.format("configuration file %s: mode must be certificate, "
            .. "public_key or both, not %s", sources.mode, mode)
    end
    if mode == "certificate" then
        settings.public_key_file, settings.public_key_id = nil, nil
    elseif mode == "public_key" then
        settings.apiv3_key, settings.apiv3_key_file = nil, nil
    end
    return true
end

-- Loads the settings.  opts: config (the --config path or nil), env (a
-- function like os.getenv).  Returns settings and sources (setting name
-- to the file path or variable it came from), or nil and a message.
function _M.load(opts)
    local env = opts.env or os.getenv
    local settings, sources = {}, {}
    local path = opts.config
    local explicit = path ~= nil
    if not path then
        path = env("WECHATPAY_CONFIG")
        explicit = path ~= nil and path ~= ""
        if not explicit then
            path = default_path(env)
        end
    end
    if path and (explicit or lfs.attributes(path, "mode")) then
        local ok, err = read_config_file(path, settings, sources)
        if not ok then
            return nil, err
        end
        settings.config_file = path
    elseif path then
        settings.config_file = path .. " (absent)"
    end
    local ok, err = apply_mode(settings, sources)
    if not ok then
        return nil, err
    end
    settings.mode = nil

    for name, setting in pairs(_M.SETTINGS) do
        local value = setting.env and env(setting.env)
        if value and value ~= "" then
            local converted, problem = convert(name, value, true)
            if converted == nil then
                return nil, string.format("%s %s", setting.env, problem)
            end
            settings[name] = converted
            sources[name] = setting.env
        end
    end
    return settings, sources
end

-- Names where a setting can be given, for messages.
function _M.where(name, settings)
    local setting = _M.SETTINGS[name]
    local file = settings.config_file or "the configuration file"
    if setting and setting.env then
        return file .. " or " .. setting.env
    end
    return file
end

-- Reads the APIv3 key from its file: 32 bytes, a final line break
-- ignored.  Returns the key or nil and a message.
local function read_apiv3_key(path)
    local ok, err = _M.check_private(path, "APIv3 key file")
    if not ok then
        return nil, err
    end
    local text
    text, err = read_file(path)
    if not text then
        return nil, "APIv3 key file " .. path .. " cannot be read: " .. err
    end
    text = text:gsub("\r?\n$", "")
    if #text ~= 32 then
        return nil, string.format("APIv3 key file %s must contain the 32-byte APIv3 key, "
            .. "found %d bytes", path, #text)
    end
    return text
end

-- Builds the options of wechatpay.new from settings.  Returns them or
-- nil and a message.
function _M.client_options(settings, sources)
    for _, name in ipairs({ "mchid", "serial_no", "private_key_file", "base_url" }) do
        if settings[name] == nil then
            local hint = ""
            if name == "base_url" then
                hint = " (https://api.mch.weixin.qq.com is the platform; there is no "
                    .. "default, so that nothing reaches it by accident)"
            end
            return nil, string.format("%s is not set; set it in %s%s", name,
                _M.where(name, settings), hint)
        end
    end
    local ok, err = _M.check_private(settings.private_key_file, "private key file")
    if not ok then
        return nil, err
    end
    local apiv3_key = settings.apiv3_key
    if settings.apiv3_key_file then
        if apiv3_key and sources.apiv3_key == sources.apiv3_key_file then
            return nil, string.format("%s sets both apiv3_key and apiv3_key_file; keep one",
                sources.apiv3_key)
        end
        -- WECHATPAY_APIV3_KEY_FILE overrides a key written in the file.
        apiv3_key, err = read_apiv3_key(settings.apiv3_key_file)
        if not apiv3_key then
            return nil, err
        end
    end
    return {
        mchid = settings.mchid,
        serial_no = settings.serial_no,
        private_key_file = settings.private_key_file,
        apiv3_key = apiv3_key,
        public_key_file = settings.public_key_file,
        public_key_id = settings.public_key_id,
        base_url = settings.base_url,
        sub_mchid = settings.sub_mchid,
        ca_file = settings.ca_file,
        timeout = settings.timeout,
    }
end

-- Creates the client.  Returns it, or nil and a message that names the
-- setting at fault and where it came from.
function _M.new_client(settings, sources)
    local options, err = _M.client_options(settings, sources)
    if not options then
        return nil, err
    end
    local client
    client, err = wechatpay.new(options)
    if not client then
        local field = err.field and err.field:gsub("_file$", "") or nil
        local origin = sources[err.field or ""] or sources[(field or "") .. "_file"]
        local message = tostring(err.message)
        if origin then
            message = message .. " (from " .. origin .. ")"
        end
        return nil, "invalid configuration: " .. message
    end
    return client
end

return _M
