-- Settings of wechatpay-guide: a configuration file (Lua or JSON),
-- overridden setting by setting by WECHATPAY_* environment variables,
-- and the client built from them.
--
-- The file is config.lua under $XDG_CONFIG_HOME/wechatpay (or
-- ~/.config/wechatpay), or config.json there when config.lua is absent,
-- or the path given with --config or WECHATPAY_CONFIG.  A name ending in
-- .json is read as JSON, and any other as Lua (a table returned, or
-- global assignments).  Lua runs in an empty environment without
-- globals, and is stopped after MAX_INSTRUCTIONS VM instructions.  The
-- methods of strings stay reachable through the string metatable.
-- The sandbox's sandbox.json is such a file.
--
-- A configured path is repeated in messages only when it is plainly a
-- path (see shown_path), because a key pasted where its file's path
-- belongs must not be printed.
local lfs = require("lfs")
local json = require("dkjson")
local output = require("wechatpay.cli.output")
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

-- Longest configured path that messages repeat.
local MAX_SHOWN_PATH = 200

-- Seconds for a whole call: DEADLINE_FACTOR times the timeout of one
-- attempt, at most the library's maximum.
local DEADLINE_FACTOR = 3
local MAX_DEADLINE = 86400

-- VM instructions that a Lua configuration file may run, far more than
-- setting a few values takes, so that a loop cannot hang the tool.
local MAX_INSTRUCTIONS = 1000000

local FILE_TYPES = {
    directory = "a directory", ["char device"] = "a character device",
    ["block device"] = "a block device", socket = "a socket", other = "a special file",
}

-- Returns true when text consists of base64 characters only and is long
-- enough to be a key or a line of one.
local function base64_only(text)
    local compact = text:gsub("%s", "")
    return #compact >= 16 and compact:find("^[%w+/=]+$") ~= nil
end

-- Returns true when text is plainly a file path: at most MAX_SHOWN_PATH
-- bytes, with a '/' or '.', and no whitespace or control character.  A
-- value that contains '/' but otherwise looks like base64 (upper and
-- lower case letters and digits, and no '.') is not, because a line of
-- a PEM key has that form.
local function shown_path(text)
    if #text > MAX_SHOWN_PATH or not text:find("[/.]") or text:find("[%s%c\127]") then
        return false
    end
    local mixed = text:find("%u") and text:find("%l") and text:find("%d")
    return not (mixed and base64_only(text))
end

-- Names a configured file in messages: "DESCRIPTION PATH", or
-- "DESCRIPTION: the path given (N bytes)" when path is not plainly a path.
function _M.name_file(description, path)
    if shown_path(path) then
        return description .. " " .. path
    end
    return string.format("%s: the path given (%d bytes)", description, #path)
end

-- Returns the message of a file that cannot be read.  When the value
-- given as its path looks like key material, the message adds that a key
-- was probably given in place of the path of a file containing it.
local function unreadable(description, path, reason)
    local message = _M.name_file(description, path) .. " cannot be read: " .. reason
    if not shown_path(path) and (#path > MAX_SHOWN_PATH or base64_only(path)) then
        message = message .. "; this looks like a key rather than a file path: give the "
            .. "path of a file that contains the key"
    end
    return message
end

-- Returns an error message of io.open or lfs without the path it starts
-- with, since the path may be a secret.
local function reason_of(err, path)
    local text = tostring(err)
    local _, finish = text:find(path, 1, true)
    if finish then
        return (text:sub(finish + 1):gsub("^'?:%s*", ""))
    end
    return text
end

-- Returns true when the user running the tool owns a file or is root,
-- so that chmod can fix its permissions.
-- NOTE: the user is found through /proc/self, so elsewhere than Linux
-- every file counts as the user's own.
local function owned_by_user(attributes)
    local uid = lfs.attributes("/proc/self", "uid")
    return uid == nil or uid == 0 or uid == attributes.uid
end

-- Rejects a path that is not a regular file (or a pipe, as the shell's
-- <(...) gives), or that group or others may read or write, because it
-- contains a secret or, for the configuration, sets where requests go.
-- Returns true or nil and a message with the fix.
function _M.check_private(path, description)
    local attributes, err = lfs.attributes(path)
    if not attributes then
        return nil, unreadable(description, path, reason_of(err, path))
    end
    local name = _M.name_file(description, path)
    local mode = attributes.mode
    if mode ~= "file" and mode ~= "named pipe" then
        return nil, string.format("%s is %s, not a regular file", name,
            FILE_TYPES[mode] or mode)
    end
    local permissions = attributes.permissions
    if permissions:sub(4, 9) ~= "------" then
        local fix = "make it readable and writable by its owner only"
        if mode == "file" and not owned_by_user(attributes) then
            fix = "it belongs to another user, so copy it to a file of your own and run "
                .. "chmod 600 on the copy"
        elseif mode == "file" and shown_path(path) then
            fix = "run: chmod 600 " .. path
        end
        return nil, string.format("%s can be accessed by group or others (%s); %s", name,
            permissions, fix)
    end
    return true
end

-- Reads a whole file.  Returns its text, or nil and the reason, without
-- the path.
local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, reason_of(err, path)
    end
    local data
    data, err = f:read("a")
    f:close()
    if not data then
        return nil, reason_of(err, path)
    end
    return data
end

-- Runs chunk in a coroutine that a count hook stops after
-- MAX_INSTRUCTIONS VM instructions.  Returns true and the chunk's
-- result, false and "too long", or false and the error.
local function run_limited(chunk)
    local stopped = {}
    local thread = coroutine.create(chunk)
    debug.sethook(thread, function()
        error(stopped, 0)
    end, "", MAX_INSTRUCTIONS)
    local ok, result = coroutine.resume(thread)
    if not ok and result == stopped then
        return false, "too long"
    end
    return ok, result
end

-- Loads a Lua configuration file in an empty environment, without
-- globals, and with an instruction limit.  A syntax error is
-- reported by line only, because the text near it could be part of a
-- key.  Returns the settings, or nil, a message and whether the message
-- continues the file's name as a sentence.
-- NOTE: the string methods stay reachable (("x"):rep(n)), and one call
-- of them is not interrupted by the limit, so a file can still take
-- much memory or time in a single call.
local function load_lua(path)
    local text, err = read_file(path)
    if not text then
        return nil, "cannot be read: " .. err
    end
    -- As loadfile does, skip a byte-order mark and a first line starting
    -- with #, which becomes a comment so that line numbers stay right.
    text = text:gsub("^\239\187\191", "")
    if text:sub(1, 1) == "#" then
        text = "--" .. text
    end
    local env = {}
    local chunk
    chunk, err = load(text, "=config", "t", env)
    if not chunk then
        local line = tostring(err):match(":(%d+):")
        return nil, "syntax error" .. (line and (" on line " .. line) or "")
    end
    local ok, result = run_limited(chunk)
    if not ok then
        if result == "too long" then
            return nil, string.format("runs too long (stopped after %d Lua VM instructions); "
                .. "a configuration file only sets values", MAX_INSTRUCTIONS), true
        end
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
        return nil, "cannot be read: " .. err
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
    local name = _M.name_file("configuration file", path)
    local values, continues
    if path:match("%.json$") then
        values, err = load_json(path)
    else
        values, err, continues = load_lua(path)
    end
    if not values then
        return nil, name .. (continues and " " or ": ") .. err
    end
    local dir = folder_of(path)
    for setting, value in pairs(values) do
        if not IGNORED[setting] then
            if type(setting) ~= "string" or not _M.SETTINGS[setting] then
                return nil, string.format("%s: unknown setting %s; see wechatpay-guide --help "
                    .. "for the settings", name, output.printable(setting))
            end
            local converted, problem = convert(setting, value, false)
            if converted == nil then
                return nil, string.format("%s: %s %s", name, setting, problem)
            end
            if _M.SETTINGS[setting].type == "path" and not converted:match("^/") then
                converted = dir .. "/" .. converted
            end
            settings[setting] = converted
            sources[setting] = path
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
        return nil, string.format("%s: mode must be certificate, public_key or both, not %s",
            _M.name_file("configuration file", sources.mode), output.printable(mode))
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
        settings.config_file = path
        settings.config_file_absent = true
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
    local path = settings.config_file
    local file = "the configuration file"
    if path and shown_path(path) then
        file = path .. (settings.config_file_absent and " (absent)" or "")
    end
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
        return nil, unreadable("APIv3 key file", path, err)
    end
    text = text:gsub("\r?\n$", "")
    if #text ~= 32 then
        return nil, string.format("%s must contain the 32-byte APIv3 key, found %d bytes",
            _M.name_file("APIv3 key file", path), #text)
    end
    return text
end

-- Names where a setting came from: its environment variable, an option
-- such as --timeout, or the configuration file.
local function describe_source(source)
    if source:match("^WECHATPAY_[%u%d_]+$") or source:match("^%-%-") then
        return source
    end
    return _M.name_file("configuration file", source)
end

-- Builds the options of wechatpay.new from settings.  The deadline of a
-- whole call is DEADLINE_FACTOR times the timeout of one attempt, as the
-- library's defaults are (10 and 30 seconds).  Returns them or nil and
-- a message.
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
                describe_source(sources.apiv3_key))
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
        deadline = settings.timeout
            and math.min(settings.timeout * DEADLINE_FACTOR, MAX_DEADLINE),
    }
end

-- Replaces in a message of the library each configured path that is not
-- plainly a path, in case the library repeats it.  Values shorter than
-- 16 bytes stay, since they are too short to be keys and could match
-- ordinary words of the message.
local function hide_paths(message, settings)
    for name, setting in pairs(_M.SETTINGS) do
        local path = settings[name]
        if setting.type == "path" and path and #path >= 16 and not shown_path(path) then
            local first, last = message:find(path, 1, true)
            while first do
                local hidden = string.format("the path given (%d bytes)", #path)
                message = message:sub(1, first - 1) .. hidden .. message:sub(last + 1)
                first, last = message:find(path, first + #hidden, true)
            end
        end
    end
    return message
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
        local message = hide_paths(tostring(err.message), settings)
        if origin then
            message = message .. " (from " .. describe_source(origin) .. ")"
        end
        return nil, "invalid configuration: " .. message
    end
    return client
end

return _M
