-- Shared helpers for the specs: files, temporary folders, the openssl
-- command line, the known-answer vectors and the sandbox.
local core = require("wechatpay.core")
local secrets = require("support.secrets")

-- In a run that scans for leaked secrets, record them from here on.
secrets.install()

local helper = {}

local temp_dirs = {}

function helper.read(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

function helper.write(path, data, mode)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    if mode then
        assert(os.execute(string.format("chmod %s '%s'", mode, path)))
    end
    return path
end

function helper.exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

-- Quotes a string for /bin/sh.
function helper.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns its stdout, and true when it exited 0.
function helper.run(command)
    local p = assert(io.popen(command, "r"))
    local out = p:read("a")
    local ok = p:close()
    return out, ok == true
end

function helper.sleep(seconds)
    os.execute(string.format("sleep %.3f", seconds))
end

-- Makes a temporary folder that helper.cleanup() removes.
function helper.tmpdir()
    local dir = helper.run("mktemp -d /tmp/wechatpay-spec.XXXXXX"):gsub("%s+$", "")
    assert(dir ~= "", "mktemp failed")
    temp_dirs[#temp_dirs + 1] = dir
    return dir
end

function helper.cleanup()
    for _, dir in ipairs(temp_dirs) do
        os.execute("rm -rf " .. helper.shell_quote(dir))
    end
    temp_dirs = {}
end

-- Runs the openssl command line; input, when given, goes to its stdin
-- through a file.  Returns stdout and whether it succeeded.
function helper.openssl(args, input)
    local command = "openssl " .. args
    if input then
        local dir = helper.tmpdir()
        local path = helper.write(dir .. "/stdin", input)
        command = command .. " < " .. helper.shell_quote(path)
    end
    return helper.run(command .. " 2>/dev/null")
end

-- The known-answer vectors live outside the project; nil when absent.
helper.vectors_dir = os.getenv("WXP_VECTORS") or "../shared/vectors"

function helper.vectors()
    local path = helper.vectors_dir .. "/vectors.json"
    if not helper.exists(path) then
        return nil
    end
    return assert(core.json_decode(helper.read(path)))
end

function helper.vector_file(name)
    return helper.read(helper.vectors_dir .. "/" .. name)
end

-- Our own process id, so that the sandbox can exit when we do.
local function own_pid()
    local stat = helper.read("/proc/self/stat")
    return stat:match("^(%d+)")
end

local control_clients = {}

-- Sends a request to the sandbox's unsigned control API (/sandbox/...).
local function control(config, method, path, body)
    local base_url = config.base_url
    local control_http = control_clients[base_url]
    if not control_http then
        control_http = assert(core.new_http({ timeout = 10, ca_file = config.ca_file }))
        control_clients[base_url] = control_http
    end
    local payload = body and assert(core.json_encode(body)) or nil
    local res, code, message = control_http:request(method, base_url .. path,
        { "Content-Type: application/json", "Accept: application/json" },
        payload)
    assert(res, "sandbox control request failed: " .. tostring(code)
        .. " " .. tostring(message))
    assert(res.status < 300, "sandbox control " .. path .. " returned "
        .. res.status .. ": " .. res.body)
    if res.body ~= "" then
        return assert(core.json_decode(res.body))
    end
    return true
end

-- Starts a sandbox in its own process.  opts: mode ("certificate",
-- "public_key" or "both"), tls (boolean), args (more command-line text).
-- Returns a handle with config (the decoded sandbox.json), base_url,
-- control(method, path, body) and stop().
function helper.start_sandbox(opts)
    opts = opts or {}
    local dir = helper.tmpdir()
    local args = string.format("--port 0 --dir %s --mode %s --parent-pid %s",
        helper.shell_quote(dir), opts.mode or "certificate", own_pid())
    if opts.tls then
        args = args .. " --tls"
    end
    if opts.args then
        args = args .. " " .. opts.args
    end
    local command = string.format("lua5.4 bin/wechatpay-sandbox %s > %s 2>&1 & echo $!",
        args, helper.shell_quote(dir .. "/sandbox.log"))
    local pid = helper.run(command):match("%d+")
    local config_path = dir .. "/sandbox.json"

    for _ = 1, 200 do
        if helper.exists(config_path) then
            break
        end
        helper.sleep(0.05)
    end
    if not helper.exists(config_path) then
        os.execute("kill " .. pid .. " 2>/dev/null")
        error("sandbox did not start: " .. helper.read(dir .. "/sandbox.log"))
    end

    local config = assert(core.json_decode(helper.read(config_path)))
    local handle = { config = config, base_url = config.base_url, dir = dir, pid = pid }
    secrets.needle("apiv3_key", config.apiv3_key)
    secrets.needle("private_key", helper.read(config.private_key_file):match(
        "\n([A-Za-z0-9+/=]+)\r?\n"))

    function handle.control(method, path, body)
        return control(config, method, path, body)
    end

    function handle.stop()
        os.execute("kill " .. pid .. " 2>/dev/null")
        secrets.capture(helper.read(dir .. "/sandbox.log"))
    end

    function handle.log()
        return helper.read(dir .. "/sandbox.log")
    end

    return handle
end

-- Starts a sandbox (opts as for start_sandbox) before the tests of the
-- enclosing describe block and stops it after them.  Returns the handle,
-- whose fields are filled in once the block's setup has run.
function helper.use_sandbox(opts)
    local busted = require("busted")
    local handle = {}
    busted.setup(function()
        for key, value in pairs(helper.start_sandbox(opts)) do
            handle[key] = value
        end
    end)
    busted.teardown(function()
        -- stop is missing when the sandbox failed to start.
        if handle.stop then
            handle.stop()
        end
        helper.cleanup()
    end)
    return handle
end

-- Returns the entries of a sandbox's request log whose target starts
-- with prefix, oldest first.
function helper.requests_to(sandbox, prefix)
    local found = {}
    for _, entry in ipairs(sandbox.control("GET", "/sandbox/requests")) do
        if entry.target:sub(1, #prefix) == prefix then
            found[#found + 1] = entry
        end
    end
    return found
end

-- Returns the newest entry of a sandbox's request log.
function helper.last_request(sandbox)
    local log = sandbox.control("GET", "/sandbox/requests")
    return log[#log]
end

-- Client options for a sandbox handle, merged with extra, where false
-- removes an option.
function helper.client_options(sandbox, extra)
    local c = sandbox.config
    local opts = {
        mchid = c.mchid,
        serial_no = c.serial_no,
        private_key_file = c.private_key_file,
        base_url = c.base_url,
        ca_file = c.ca_file,
    }
    if c.mode ~= "public_key" then
        opts.apiv3_key = c.apiv3_key
    end
    if c.mode ~= "certificate" then
        opts.public_key_file = c.public_key_file
        opts.public_key_id = c.public_key_id
    end
    for k, v in pairs(extra or {}) do
        opts[k] = v ~= false and v or nil
    end
    return opts
end

return helper
