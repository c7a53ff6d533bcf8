-- A load generator for the sandbox.  Several worker processes send
-- pre-signed requests (each with its own nonce) over keep-alive
-- connections.  The run reports requests per second, and the sandbox's
-- CPU time per request next to the cost of one bare RSA sign plus one
-- verify on the same machine.
--
--   lua5.4 lua/wechatpay/sandbox/loadgen.lua --config DIR/sandbox.json \
--       --pid SANDBOX_PID [--workers 2] [--requests 5000]
--
-- It needs LUA_PATH and LUA_CPATH to find wechatpay.core, and it sends
-- requests only to the base_url in sandbox.json, which the sandbox
-- restricts to loopback.  CPU time comes from /proc/PID/stat (Linux).
local core = require("wechatpay.core")
local cqueues = require("cqueues")

local _M = {}

local MODULE_NAME = "wechatpay.sandbox.loadgen"
local DEFAULT_TARGET = "/v3/smartguide/guides?store_id=1234"
-- Clock ticks per second in /proc/PID/stat; 100 on Linux unless the
-- kernel was built otherwise (getconf CLK_TCK).
local DEFAULT_CLOCK_TICKS = 100
local CALIBRATION_ROUNDS = 500

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

local function clock_ticks()
    local p = io.popen("getconf CLK_TCK 2>/dev/null")
    local value = p and tonumber(p:read("l"))
    if p then
        p:close()
    end
    return value or DEFAULT_CLOCK_TICKS
end

-- Returns the user plus system CPU seconds that process pid has used.
local function cpu_seconds(pid, ticks)
    local stat = read_file("/proc/" .. pid .. "/stat")
    local fields = {}
    for field in stat:match("^%d+ %b() (.*)$"):gmatch("%S+") do
        fields[#fields + 1] = field
    end
    -- utime and stime are fields 14 and 15 of stat; fields[] starts at 3.
    return (tonumber(fields[12]) + tonumber(fields[13])) / ticks
end

local function sleep_until(deadline)
    local remaining = deadline - cqueues.monotime()
    if remaining > 0 then
        os.execute(string.format("sleep %.3f", remaining))
    end
end

-- Returns the CPU seconds of one RSA-2048 sign plus one verify.
local function calibrate(key, public_key)
    local started = os.clock()
    for i = 1, CALIBRATION_ROUNDS do
        local message = "calibration " .. i
        assert(public_key:verify(message, key:sign(message)))
    end
    return (os.clock() - started) / CALIBRATION_ROUNDS
end

-- The worker: signs count requests, waits until start_at (monotonic
-- seconds), sends them, and prints "started finished ok failed".
local function run_worker(config_path, count, start_at, target)
    local config = assert(core.json_decode(read_file(config_path)))
    local key = assert(core.load_private_key(read_file(config.private_key_file)))
    local http = assert(core.new_http({ timeout = 10, ca_file = config.ca_file,
        user_agent = "wechatpay-sandbox-loadgen/1.0" }))
    local url = config.base_url .. target
    local signed = {}
    local timestamp = os.time()
    for i = 1, count do
        signed[i] = { "Accept: application/json", "Authorization: " .. assert(
            core.authorization(key, config.mchid, config.serial_no, "GET", target, "",
                timestamp)) }
    end

    sleep_until(start_at)
    local started = cqueues.monotime()
    local ok, failed = 0, 0
    for i = 1, count do
        local res = http:request("GET", url, signed[i])
        if res and res.status == 200 then
            ok = ok + 1
        else
            failed = failed + 1
        end
    end
    io.stdout:write(string.format("%.6f %.6f %d %d\n", started, cqueues.monotime(), ok,
        failed))
    return 0
end

local function parse_arguments(argv)
    local options = { workers = 2, requests = 5000, target = DEFAULT_TARGET }
    local i = 1
    while i <= #argv do
        local name, value = argv[i], argv[i + 1]
        if name == "--config" then
            options.config = value
        elseif name == "--pid" then
            options.pid = tonumber(value)
        elseif name == "--workers" then
            options.workers = tonumber(value)
        elseif name == "--requests" then
            options.requests = tonumber(value)
        elseif name == "--target" then
            options.target = value
        elseif name == "--worker-start" then
            options.worker_start = tonumber(value)
        else
            return nil, "unknown option " .. tostring(name)
        end
        i = i + 2
    end
    if not options.config then
        return nil, "--config DIR/sandbox.json is required"
    end
    return options
end

local function quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs the whole measurement and prints the report.
local function run(options)
    local config = assert(core.json_decode(read_file(options.config)))
    local key = assert(core.load_private_key(read_file(config.private_key_file)))
    local certificate = assert(core.load_certificate(read_file(config.certificate_file)))
    local sign_verify = calibrate(key, certificate:public_key())

    -- Each worker signs its requests before start_at: about 0.3 ms each.
    local start_at = cqueues.monotime() + 1 + options.requests * sign_verify * 2
    local script = debug.getinfo(1, "S").source:sub(2)
    local workers = {}
    for i = 1, options.workers do
        workers[i] = assert(io.popen(string.format("lua5.4 %s --config %s --requests %d"
            .. " --target %s --worker-start %.6f", quote(script), quote(options.config),
            options.requests, quote(options.target), start_at)))
    end

    local ticks = clock_ticks()
    sleep_until(start_at)
    local cpu_before = options.pid and cpu_seconds(options.pid, ticks)
    local first, last, ok, failed = math.huge, 0, 0, 0
    for _, worker in ipairs(workers) do
        local line = worker:read("l")
        worker:close()
        local started, finished, worker_ok, worker_failed =
            (line or ""):match("^(%S+) (%S+) (%d+) (%d+)$")
        assert(started, "a worker failed: " .. tostring(line))
        first = math.min(first, tonumber(started))
        last = math.max(last, tonumber(finished))
        ok = ok + tonumber(worker_ok)
        failed = failed + tonumber(worker_failed)
    end
    local cpu_after = options.pid and cpu_seconds(options.pid, ticks)

    local total = ok + failed
    local elapsed = last - first
    print(string.format("requests: %d (%d ok, %d failed) by %d workers in %.2f s",
        total, ok, failed, options.workers, elapsed))
    print(string.format("throughput: %.0f requests/s", total / elapsed))
    print(string.format("bare RSA-2048 sign + verify: %.3f ms", sign_verify * 1000))
    if cpu_before then
        local per_request = (cpu_after - cpu_before) / total
        print(string.format("sandbox CPU: %.2f s, %.3f ms per request, %.2f x sign + verify",
            cpu_after - cpu_before, per_request * 1000, per_request / sign_verify))
    end
    return failed == 0 and 0 or 1
end

function _M.main(argv)
    local options, err = parse_arguments(argv or {})
    if not options then
        io.stderr:write("loadgen: ", err, "\n")
        return 2
    end
    if options.worker_start then
        return run_worker(options.config, options.requests, options.worker_start,
            options.target)
    end
    return run(options)
end

-- Run as a script: lua5.4 loadgen.lua ...
if (...) ~= MODULE_NAME then
    os.exit(_M.main(arg))
end

return _M
