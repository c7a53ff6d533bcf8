-- Helpers shared by the benchmark scripts: files, process CPU time and
-- resident memory, the sandbox (start, stop, control API) and the JSON
-- line each benchmark prints for bench/run.lua.
--
-- The scripts run from the repository root with LUA_PATH covering lua/
-- and bench/, and LUA_CPATH covering build/ (bench/run.sh sets both).
local core = require("wechatpay.core")

local _M = {}

function _M.read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

function _M.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    return path
end

function _M.exists(path)
    local f = io.open(path, "rb")
    if f then
        f:close()
    end
    return f ~= nil
end

-- Quotes a string for /bin/sh.
function _M.shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command and returns its whole standard output.
function _M.capture(command)
    local p = assert(io.popen(command, "r"))
    local out = p:read("a")
    p:close()
    return out
end

function _M.sleep(seconds)
    os.execute(string.format("sleep %.3f", seconds))
end

-- Returns the CPU time (user plus system, all threads) this process has
-- used, in seconds: os.clock() is C's clock(), which is process CPU time
-- on Linux.
_M.cpu = os.clock

-- Returns the resident set size (VmRSS) of this process in KiB.
function _M.rss_kib()
    local status = _M.read_file("/proc/self/status")
    return tonumber(status:match("VmRSS:%s*(%d+)"))
end

-- Clock ticks per second of the times in /proc/PID/stat (getconf CLK_TCK;
-- 100 on Linux unless the kernel was built otherwise).
local clock_ticks

-- Returns the user and the system CPU seconds that process pid ("self"
-- by default) has used, from /proc/PID/stat, to the clock tick.
function _M.process_times(pid)
    clock_ticks = clock_ticks or tonumber(_M.capture("getconf CLK_TCK"):match("%d+")) or 100
    local stat = _M.read_file("/proc/" .. (pid or "self") .. "/stat")
    local fields = {}
    for field in stat:match("^%d+ %b() (.*)$"):gmatch("%S+") do
        fields[#fields + 1] = field
    end
    -- utime and stime are fields 14 and 15 of stat; fields[] starts at 3.
    return tonumber(fields[12]) / clock_ticks, tonumber(fields[13]) / clock_ticks
end

-- Returns the process id of this Lua process.
function _M.own_pid()
    return _M.read_file("/proc/self/stat"):match("^(%d+)")
end

-- Prints one result as a JSON line, prefixed so that run.lua can find it
-- among other output.
function _M.emit(result)
    io.stdout:write("RESULT ", assert(core.json_encode(result)), "\n")
    io.stdout:flush()
end

-- Loads DIR/sandbox.json.
function _M.load_sandbox(path)
    return assert(core.json_decode(_M.read_file(path)))
end

-- Client options for a sandbox configuration: the keys its mode uses,
-- as spec/helper.lua's client_options does.
function _M.client_options(config)
    local opts = {
        mchid = config.mchid,
        serial_no = config.serial_no,
        private_key_file = config.private_key_file,
        base_url = config.base_url,
        ca_file = config.ca_file,
    }
    if config.mode ~= "public_key" then
        opts.apiv3_key = config.apiv3_key
    end
    if config.mode ~= "certificate" then
        opts.public_key_file = config.public_key_file
        opts.public_key_id = config.public_key_id
    end
    return opts
end

local control_clients = {}

-- Sends a request to the sandbox's unsigned control API (/sandbox/...)
-- and returns the decoded response body.  Raises on any failure.
function _M.control(config, method, path, body)
    local http = control_clients[config.base_url]
    if not http then
        http = assert(core.new_http({ timeout = 30, ca_file = config.ca_file }))
        control_clients[config.base_url] = http
    end
    local payload = body and assert(core.json_encode(body)) or nil
    local res, code, message = http:request(method, config.base_url .. path,
        { "Content-Type: application/json", "Accept: application/json" }, payload)
    assert(res, "sandbox control request failed: " .. tostring(code) .. " "
        .. tostring(message))
    assert(res.status < 300, "sandbox control " .. path .. " returned " .. res.status
        .. ": " .. res.body)
    if res.body ~= "" then
        return assert(core.json_decode(res.body))
    end
    return true
end

-- Starts bin/wechatpay-sandbox in the background.  opts: mode, dir,
-- tls (boolean).  Returns { pid, dir, config_path, config }; raises when
-- it does not write sandbox.json within 20 seconds.
function _M.start_sandbox(opts)
    local dir = opts.dir
    os.execute("rm -rf " .. _M.shell_quote(dir) .. " && mkdir -p " .. _M.shell_quote(dir))
    local args = string.format("--port 0 --quiet --dir %s --mode %s --parent-pid %s",
        _M.shell_quote(dir), opts.mode, _M.own_pid())
    if opts.tls then
        args = args .. " --tls"
    end
    local pid = _M.capture(string.format("lua5.4 bin/wechatpay-sandbox %s > %s 2>&1 & echo $!",
        args, _M.shell_quote(dir .. "/sandbox.log"))):match("%d+")
    local config_path = dir .. "/sandbox.json"
    for _ = 1, 400 do
        if _M.exists(config_path) then
            break
        end
        _M.sleep(0.05)
    end
    if not _M.exists(config_path) then
        os.execute("kill " .. pid .. " 2>/dev/null")
        error("sandbox did not start: " .. _M.read_file(dir .. "/sandbox.log"))
    end
    return { pid = pid, dir = dir, config_path = config_path,
        config = _M.load_sandbox(config_path) }
end

-- Stops a sandbox started by start_sandbox, by its process id, and waits
-- up to 5 seconds for it to exit.
function _M.stop_sandbox(sandbox)
    os.execute("kill " .. sandbox.pid .. " 2>/dev/null")
    for _ = 1, 100 do
        if not _M.exists("/proc/" .. sandbox.pid .. "/stat") then
            return
        end
        _M.sleep(0.05)
    end
end

return _M
