-- Runs every benchmark in one go and writes bench/results.json, then
-- bench/report.lua turns it into bench/RESULTS.md and the chart.
-- bench/run.sh (make bench) installs what this needs and calls it:
--
--   lua5.4 bench/run.lua [--quick]
--
-- --quick runs every benchmark with fewer calls, to check the harness.
-- Each benchmark runs in its own process and prints a RESULT line; the
-- sandboxes, nginx and wrk it starts are stopped by their process ids.
local benchlib = require("benchlib")
local core = require("wechatpay.core")

local quick = arg[1] == "--quick"
local WORK_DIR = os.getenv("WXP_BENCH_DIR") or ("/tmp/wechatpay-bench." .. benchlib.own_pid())
local RESULTS_PATH = "bench/results.json"

-- Calls per benchmark: the full run took 330 s on a 2-core Xeon VM, a
-- third of it the 100,000 assign calls of the memory run.
local SIZES = quick and {
    rounds = 3, calls = 20, alternations = 1, first = 1000, total = 3000,
    staff = 100, page_rounds = 1, rows = 100, wrk_seconds = 3, speed_seconds = 1,
} or {
    rounds = 10, calls = 100, alternations = 2, first = 10000, total = 100000,
    staff = 1000, page_rounds = 3, rows = 1000, wrk_seconds = 10, speed_seconds = 3,
}

local function log(fmt, ...)
    io.stderr:write(string.format("bench: " .. fmt .. "\n", ...))
end

-- Environment for the Node.js process: no proxy settings or Node
-- options, so that the SDK's HTTP client connects straight to the
-- sandbox on loopback.
local NODE_ENV = "env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY "
    .. "-u ALL_PROXY -u all_proxy -u NO_PROXY -u no_proxy -u NODE_OPTIONS "

-- Runs a benchmark command and returns the decoded RESULT line; raises
-- with the command's output when there is none.
local function run_result(command)
    local out = benchlib.capture(command .. " 2>&1")
    local line = out:match("RESULT (%b{})")
    if not line then
        error("benchmark failed: " .. command .. "\n" .. out)
    end
    return assert(core.json_decode(line))
end

-- Returns the first line a command writes to standard output and error.
local function first_line(command)
    return (benchlib.capture(command .. " 2>&1"):match("[^\n]*") or "")
end

local function machine()
    local cpuinfo = benchlib.read_file("/proc/cpuinfo")
    return {
        cpu = cpuinfo:match("model name%s*:%s*([^\n]+)") or "unknown",
        cores = tonumber(first_line("nproc")),
        kernel = first_line("uname -sr"),
        os = first_line(". /etc/os-release && echo \"$PRETTY_NAME\""),
        openssl = first_line("openssl version"),
        curl = core.curl_version(),
        lua = first_line("lua5.4 -v"):match("^Lua %S+") or "",
        node = first_line("node --version"),
        nginx = first_line("nginx -v"):match("nginx/%S+") or "not installed",
        wrk = first_line("wrk --version"):match("^wrk %S+") or "not installed",
        gnuplot = first_line("gnuplot --version"),
        date = os.date("!%Y-%m-%d %H:%M UTC"),
    }
end

-- Parses `openssl speed rsa2048`: seconds per sign and per verify, as
-- measured by OpenSSL on user CPU time.
local function openssl_speed()
    local out = benchlib.capture(string.format("openssl speed -seconds %d rsa2048 2>/dev/null",
        SIZES.speed_seconds))
    local sign, verify, sign_rate, verify_rate =
        out:match("rsa 2048 bits%s+([%d.]+)s%s+([%d.]+)s%s+([%d.]+)%s+([%d.]+)")
    assert(sign, "cannot read the output of openssl speed rsa2048:\n" .. out)
    return { sign = tonumber(sign), verify = tonumber(verify),
        sign_per_second = tonumber(sign_rate), verify_per_second = tonumber(verify_rate) }
end

-- Averages the numeric leaves of several results of the same shape.
local function average(results)
    local function merge(values)
        if type(values[1]) == "number" then
            local sum = 0
            for _, v in ipairs(values) do
                sum = sum + v
            end
            return sum / #values
        end
        if type(values[1]) ~= "table" then
            return values[1]
        end
        local merged = {}
        for key in pairs(values[1]) do
            local column = {}
            for i, v in ipairs(values) do
                column[i] = v[key]
            end
            merged[key] = merge(column)
        end
        return merged
    end
    return merge(results)
end

-- Client CPU per call, ours and the SDK's, in one sandbox mode.  The two
-- alternate, so that a slow spell of the machine touches both.
local function cpu_per_call(label, mode, tls)
    log("client CPU per call, %s: starting the sandbox", label)
    local sandbox = benchlib.start_sandbox({ mode = mode, tls = tls,
        dir = WORK_DIR .. "/sandbox-" .. label })
    local ours, sdk = {}, {}
    local ok, err = pcall(function()
        for i = 1, SIZES.alternations do
            log("  lua-wechatpay, run %d of %d", i, SIZES.alternations)
            ours[i] = run_result(string.format("lua5.4 bench/client_cpu.lua %s %d %d",
                benchlib.shell_quote(sandbox.config_path), SIZES.rounds, SIZES.calls))
            log("  wechatpay-axios-plugin, run %d of %d", i, SIZES.alternations)
            sdk[i] = run_result(string.format("%s node bench/sdk_cpu.js %s %d %d", NODE_ENV,
                benchlib.shell_quote(sandbox.config_path), SIZES.rounds, SIZES.calls))
        end
    end)
    benchlib.stop_sandbox(sandbox)
    if not ok then
        error(err, 0)
    end
    return { label = label, mode = mode, tls = tls or false,
        ours = average(ours), sdk = average(sdk), runs = SIZES.alternations }
end

local function growth()
    log("growth: starting the sandbox")
    local sandbox = benchlib.start_sandbox({ mode = "public_key",
        dir = WORK_DIR .. "/sandbox-growth" })
    local results = {}
    local ok, err = pcall(function()
        local config = benchlib.shell_quote(sandbox.config_path)
        log("  memory: %d assign calls", SIZES.total)
        results.memory = run_result(string.format("lua5.4 bench/growth.lua %s memory %d %d",
            config, SIZES.first, SIZES.total))
        log("  each_guide over %d staff", SIZES.staff)
        results.pages = run_result(string.format("lua5.4 bench/growth.lua %s pages %d %d",
            config, SIZES.staff, SIZES.page_rounds))
        log("  wechatpay-guide sync of %d rows", SIZES.rows)
        results.sync = run_result(string.format("lua5.4 bench/growth.lua %s sync %d",
            config, SIZES.rows))
    end)
    benchlib.stop_sandbox(sandbox)
    if not ok then
        error(err, 0)
    end
    return results
end

local function openresty()
    log("OpenResty: starting the sandbox")
    local sandbox = benchlib.start_sandbox({ mode = "public_key",
        dir = WORK_DIR .. "/sandbox-openresty" })
    local ok, result = pcall(run_result, string.format("lua5.4 bench/openresty.lua %s %s %d",
        benchlib.shell_quote(sandbox.config_path),
        benchlib.shell_quote(WORK_DIR .. "/openresty"), SIZES.wrk_seconds))
    benchlib.stop_sandbox(sandbox)
    -- The OpenResty binding is the newest part: its failure is reported
    -- and the other figures are still written.
    if not ok then
        log("  failed: %s", tostring(result))
        result = { kind = "openresty",
            skipped = "failed: " .. tostring(result):match("[^\n]*") }
    elseif result.skipped then
        log("  skipped: %s", result.skipped)
    end
    return result
end

local started = core.monotonic()
os.execute("mkdir -p " .. benchlib.shell_quote(WORK_DIR))
local results = { quick = quick, sizes = SIZES, machine = machine() }
log("openssl speed rsa2048 (%d s per operation)", SIZES.speed_seconds)
results.openssl_speed = openssl_speed()
results.cpu_per_call = {
    cpu_per_call("public_key", "public_key", false),
    cpu_per_call("certificate", "certificate", false),
    cpu_per_call("public_key_tls", "public_key", true),
}
results.growth = growth()
results.openresty = openresty()
results.seconds = core.monotonic() - started
benchlib.write_file(RESULTS_PATH, assert(core.json_encode(results)) .. "\n")
os.execute("rm -rf " .. benchlib.shell_quote(WORK_DIR))
log("finished in %.0f s; raw figures in %s", results.seconds, RESULTS_PATH)
