-- The wechatpay-sandbox command: option parsing, the configuration
-- folder, signals and the parent-process watch around sandbox.lua.
local cqueues = require("cqueues")
local signal = require("cqueues.signal")
local sandbox = require("wechatpay.sandbox")
local util = require("wechatpay.sandbox.util")

local _M = {}

local PROGRAM = "wechatpay-sandbox"
-- Seconds between two checks that the --parent-pid process still runs.
local PARENT_CHECK_INTERVAL = 1

local USAGE = [[
Usage: wechatpay-sandbox [options]

Runs a local emulator of the WeChat Pay APIv3 platform (smartguide and
/v3/certificates) for tests and demos.  It generates test keys, writes them
and sandbox.json (the client settings) into DIR, prints one line with the
base URL, and then one line per request.  SIGTERM or SIGINT stops it, and
stopping removes DIR/sandbox.json.

Options:
  --host HOST          loopback address to listen on: 127.0.0.0/8, ::1 or
                       localhost (default 127.0.0.1); other addresses are
                       rejected
  --port PORT          TCP port; 0 picks a free port (default 0)
  --mode MODE          certificate, public_key or both: how the platform
                       signs responses and which keys encrypt sensitive
                       fields (default certificate)
  --dir DIR            folder for the keys and sandbox.json; created when
                       missing (default: a new folder from mktemp -d)
  --tls                serve https with a test CA; sandbox.json then names
                       the CA file in ca_file
  --mchid MCHID        merchant ID that requests must carry
                       (default 1900000109)
  --store-ids IDS      comma-separated store IDs that exist (default 1234)
  --platform-not-after UNIX
                       expiry of the first platform certificate, in Unix
                       seconds (default: five years from now)
  --parent-pid PID     exit when process PID is gone (checked every second)
  --quiet              no line per request or callback; errors are still
                       logged
  --help               show this text

The unsigned control API is under BASE_URL/sandbox/ (health, reset, stores,
guides, assignments, requests, clock, faults, certificates, notify).
POST /sandbox/notify sends callbacks to http URLs on loopback only.
]]

local function fail(message)
    io.stderr:write(PROGRAM, ": ", message, "\n")
    return 2
end

local VALUE_OPTIONS = {
    ["--host"] = "host", ["--port"] = "port", ["--mode"] = "mode", ["--dir"] = "dir",
    ["--mchid"] = "mchid", ["--store-ids"] = "store_ids", ["--parent-pid"] = "parent_pid",
    ["--platform-not-after"] = "platform_not_after",
}
local FLAG_OPTIONS = { ["--tls"] = "tls", ["--quiet"] = "quiet", ["--help"] = "help" }

-- Parses argv into a table of raw option values.  Returns it or nil and
-- a message.
local function parse_arguments(argv)
    local options = {}
    local i = 1
    while i <= #argv do
        local word = argv[i]
        local name, inline_value = word:match("^(%-%-[%w-]+)=(.*)$")
        name = name or word
        if VALUE_OPTIONS[name] then
            local value = inline_value
            if not value then
                i = i + 1
                value = argv[i]
            end
            if value == nil then
                return nil, name .. " needs a value"
            end
            options[VALUE_OPTIONS[name]] = value
        elseif FLAG_OPTIONS[name] and not inline_value then
            options[FLAG_OPTIONS[name]] = true
        else
            return nil, "unknown option " .. word .. "; see --help"
        end
        i = i + 1
    end
    return options
end

local function parse_integer(text, what)
    local value = text:match("^%d+$") and math.tointeger(tonumber(text))
    if not value then
        return nil, what .. " must be a non-negative integer, not " .. text
    end
    return value
end

-- Turns the raw options into sandbox.new options.
local function sandbox_options(raw)
    local opts = { host = raw.host, mode = raw.mode, mchid = raw.mchid, tls = raw.tls,
        quiet = raw.quiet }
    local err
    if raw.port then
        opts.port, err = parse_integer(raw.port, "--port")
        if not opts.port then
            return nil, err
        end
    end
    if raw.platform_not_after then
        opts.platform_not_after, err = parse_integer(raw.platform_not_after,
            "--platform-not-after")
        if not opts.platform_not_after then
            return nil, err
        end
    end
    if raw.store_ids then
        opts.store_ids = {}
        for item in raw.store_ids:gmatch("[^,]+") do
            local id
            id, err = parse_integer(item, "each --store-ids entry")
            if not id then
                return nil, err
            end
            opts.store_ids[#opts.store_ids + 1] = id
        end
    end
    return opts
end

-- Returns the absolute path of the configuration folder, creating it
-- when needed.
local function prepare_dir(dir)
    if not dir then
        local p = io.popen("mktemp -d \"${TMPDIR:-/tmp}/wechatpay-sandbox.XXXXXX\"")
        local created = p and p:read("l")
        if p then
            p:close()
        end
        if not created or created == "" then
            return nil, "mktemp -d failed; pass --dir"
        end
        return created
    end
    local quoted = util.shell_quote(dir)
    local p = io.popen("{ cd " .. quoted .. " 2>/dev/null || { mkdir -p " .. quoted
        .. " && cd " .. quoted .. "; }; } && pwd")
    local absolute = p and p:read("l")
    if p then
        p:close()
    end
    if not absolute or absolute == "" then
        return nil, "cannot create the folder " .. dir
    end
    return absolute
end

-- Returns true while process pid exists and is not a zombie.
local function process_alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if f then
        local stat = f:read("a") or ""
        f:close()
        return stat:match("^%d+ %b() (%a)") ~= "Z"
    end
    local self_stat = io.open("/proc/self/stat", "r")
    if self_stat then
        self_stat:close()
        return false
    end
    -- Without /proc, the exit status of kill -0 shows whether the process exists.
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

local function watch_parent(sb, pid)
    sb:spawn(function()
        while process_alive(pid) do
            cqueues.sleep(PARENT_CHECK_INTERVAL)
        end
        sb.log("sandbox: parent process " .. pid .. " is gone; stopping")
        sb:stop()
    end)
end

local function watch_signals(sb)
    signal.ignore(signal.SIGPIPE)
    signal.block(signal.SIGTERM, signal.SIGINT)
    local listener = signal.listen(signal.SIGTERM, signal.SIGINT)
    sb:spawn(function()
        local number = listener:wait()
        sb.log("sandbox: " .. (signal.strsignal(number) or ("signal " .. tostring(number)))
            .. "; stopping")
        sb:stop()
    end)
end

-- Runs the command with argv (the arguments without the program name)
-- and returns the exit status.
function _M.main(argv)
    local raw, err = parse_arguments(argv or {})
    if not raw then
        return fail(err)
    end
    if raw.help then
        io.stdout:write(USAGE)
        return 0
    end
    local parent_pid
    if raw.parent_pid then
        parent_pid, err = parse_integer(raw.parent_pid, "--parent-pid")
        if not parent_pid then
            return fail(err)
        end
    end
    local opts
    opts, err = sandbox_options(raw)
    if not opts then
        return fail(err)
    end

    local sb
    sb, err = sandbox.new(opts)
    if not sb then
        return fail(err)
    end
    local dir
    dir, err = prepare_dir(raw.dir)
    if not dir then
        return fail(err)
    end
    local base_url
    base_url, err = sb:listen()
    if not base_url then
        return fail(err)
    end
    local config_path
    config_path, err = sb:write_configuration(dir)
    if not config_path then
        return fail(err)
    end

    watch_signals(sb)
    if parent_pid then
        watch_parent(sb, parent_pid)
    end
    sb.log("sandbox: listening on " .. base_url .. ", configuration in " .. config_path)
    sb:run()
    os.remove(config_path)
    sb.log("sandbox: stopped")
    return 0
end

return _M
