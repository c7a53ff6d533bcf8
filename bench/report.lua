-- Writes bench/RESULTS.md and bench/cpu_per_call.png from the raw
-- figures in bench/results.json (bench/run.lua writes them):
--
--   lua5.4 bench/report.lua [RESULTS_JSON]
--
-- The chart needs gnuplot (Debian: gnuplot-nox).  Without it the report
-- is written all the same, with a note in place of the chart.
local benchlib = require("benchlib")
local core = require("wechatpay.core")

local results_path = arg[1] or "bench/results.json"
local REPORT_PATH = "bench/RESULTS.md"
local CHART_PATH = "bench/cpu_per_call.png"
local r = assert(core.json_decode(benchlib.read_file(results_path)))

local out = {}
local function say(fmt, ...)
    out[#out + 1] = select("#", ...) > 0 and string.format(fmt, ...) or fmt
end

local function us(seconds)
    return string.format("%.1f", seconds * 1e6)
end

local function x(ratio)
    return string.format("%.2f", ratio)
end

local CALLS = { "assign", "query", "register" }
local MODE_TITLES = {
    public_key = "WeChat Pay public key, http",
    certificate = "platform certificates, http",
    public_key_tls = "WeChat Pay public key, https (sandbox --tls)",
}
local CALL_TITLES = {
    assign = "assign (keep-alive)",
    query = "query by mobile (1 guide)",
    register = "register (new connection)",
}
local FLOOR_TITLES = {
    assign = "sign + verify",
    query = "sign + verify + 1 encrypt + 2 decrypt",
    register = "sign + verify + 2 encrypt",
}

local targets = {}
local function target(name, wanted, measured, met, note)
    targets[#targets + 1] = { name, wanted, measured, met and "met" or "missed", note or "" }
end

-- {======================================================================
-- Header and machine
-- =======================================================================
local m = r.machine
say("# Benchmark results")
say("")
say("Written by `make bench` (bench/run.sh, bench/run.lua, bench/report.lua) on %s%s.",
    m.date, r.quick and ", with `--quick` sizes (a harness check, not a record)" or "")
say("The whole run took %.0f s. bench/README.md says how each figure is measured.",
    r.seconds)
say("")
say("| machine | |")
say("|---|---|")
for _, row in ipairs({
    { "CPU", m.cpu }, { "cores", tostring(m.cores) }, { "kernel", m.kernel },
    { "system", m.os }, { "OpenSSL", m.openssl }, { "libcurl", m.curl }, { "Lua", m.lua },
    { "Node.js", m.node }, { "nginx", m.nginx }, { "wrk", m.wrk }, { "gnuplot", m.gnuplot },
}) do
    say("| %s | %s |", row[1], row[2])
end
say("")
say("Every figure below that is compared with a target is a ratio of two things "
    .. "measured side by side in the same run, because the machine is shared. CPU "
    .. "figures are the process CPU time (user plus system) of the client process, "
    .. "in microseconds per call, medians over %d rounds of %d calls (each round "
    .. "also times the floor's RSA operations, interleaved with the calls), averaged "
    .. "over %d alternating runs of lua-wechatpay and the Node.js SDK.",
    r.sizes.rounds, r.sizes.calls, r.sizes.alternations)

-- {======================================================================
-- Client CPU per call
-- =======================================================================
say("")
say("## 1. Client CPU per call, and 2. against the public SDK")
local sdk_name, sdk_openssl = "the SDK", "?"
for _, run in ipairs(r.cpu_per_call) do
    sdk_name = run.sdk.sdk or sdk_name
    sdk_openssl = run.sdk.openssl or sdk_openssl
end
say("")
say("The floor of a call is the RSA-2048 work it cannot avoid, timed in the same "
    .. "process with the same library: through `wechatpay.core` for lua-wechatpay and "
    .. "through Node's `crypto` (OpenSSL %s, built into Node) for %s.", sdk_openssl,
    sdk_name)

local worst_ratio, worst_sdk = { 0, "" }, { math.huge, "" }
-- The largest share of the floor that the transport alone takes, and the
-- SDK / ours ratio lua-wechatpay would reach at exactly its floor.
local transport_share, best_possible = 0, { math.huge, "" }
for _, run in ipairs(r.cpu_per_call) do
    local ours, sdk = run.ours, run.sdk
    say("")
    say("### %s", MODE_TITLES[run.label] or run.label)
    say("")
    say("| call | floor | floor µs | lua-wechatpay µs | ours / floor | SDK µs | "
        .. "SDK / its floor | SDK / ours |")
    say("|---|---|---:|---:|---:|---:|---:|---:|")
    for _, call in ipairs(CALLS) do
        local sdk_over_ours = sdk.call[call] / ours.call[call]
        say("| %s | %s | %s | %s | %s | %s | %s | **%s** |", CALL_TITLES[call],
            FLOOR_TITLES[call], us(ours.floor[call]), us(ours.call[call]),
            x(ours.ratio[call]), us(sdk.call[call]), x(sdk.ratio[call]), x(sdk_over_ours))
        if not run.tls then
            if ours.ratio[call] > worst_ratio[1] then
                worst_ratio = { ours.ratio[call], call .. ", " .. run.label }
            end
            if sdk_over_ours < worst_sdk[1] then
                worst_sdk = { sdk_over_ours, call .. ", " .. run.label }
            end
            local at_floor = sdk.call[call] / ours.floor[call]
            if at_floor < best_possible[1] then
                best_possible = { at_floor, call .. ", " .. run.label }
            end
        end
    end
    local c = ours.call
    local fresh = c.assign_fresh - c.assign_keepalive
    if not run.tls then
        transport_share = math.max(transport_share, c.bare_http / ours.floor.assign)
    end
    say("")
    say("Where the CPU of one lua-wechatpay assign goes (µs): floor %s; the client "
        .. "without the network (a transport that replays a recorded response) %s, so "
        .. "%s above the floor; the transport alone (a pre-signed request through "
        .. "libcurl, not verified) %s; the rest, %s, is the difference between the "
        .. "whole call and those parts.", us(ours.floor.assign), us(c.replay),
        us(c.replay - ours.floor.assign), us(c.bare_http),
        us(c.assign - c.replay - c.bare_http))
    say("A new connection adds %s µs (the same assign request with `idempotent = "
        .. "false`: %s µs, against %s µs on a kept-alive connection). Register pays it "
        .. "by design; without it register would be %s times its floor.", us(fresh),
        us(c.assign_fresh), us(c.assign_keepalive),
        x((c.register - fresh) / ours.floor.register))
    if c.assign_fresh_bundle then
        say("With the system CA bundle (%d certificates, plus the sandbox's CA) as "
            .. "`ca_file`, which is what libcurl reads by default and so what a client of "
            .. "the real platform uses, a new https connection costs %.1f ms of CPU. "
            .. "Every register pays it: an estimated %.0f times its floor (register, "
            .. "plus this connection, minus one with the sandbox's CA alone).",
            ours.bundle_certificates,
            c.assign_fresh_bundle * 1e3, (c.assign_fresh_bundle - c.assign_fresh
            + c.register) / ours.floor.register)
    end
end

local speed = r.openssl_speed
local pk = r.cpu_per_call[1].ours
say("")
say("Cross-check with `openssl speed rsa2048` in the same run: sign %s µs, verify %s "
    .. "µs (%.0f signs/s), so sign + verify = %s µs, against %s µs measured through "
    .. "`wechatpay.core` (ratio %s).", us(speed.sign), us(speed.verify),
    speed.sign_per_second, us(speed.sign + speed.verify),
    us(pk.primitive.sign + pk.primitive.verify),
    x((pk.primitive.sign + pk.primitive.verify) / (speed.sign + speed.verify)))

target("client CPU per call", "≤ 1.10 × floor", string.format("worst %s (%s)",
    x(worst_ratio[1]), worst_ratio[2]), worst_ratio[1] <= 1.10,
    string.format("the transport alone (bare_http) is up to %s × the assign floor; "
        .. "register also pays a new connection", x(transport_share)))
target("against the public SDK", "≥ 4 × less CPU per call",
    string.format("worst %s (%s)", x(worst_sdk[1]), worst_sdk[2]), worst_sdk[1] >= 4,
    string.format("at exactly its floor lua-wechatpay would reach only %s (%s)",
        x(best_possible[1]), best_possible[2]))

-- {======================================================================
-- OpenResty
-- =======================================================================
say("")
say("## 3. OpenResty")
say("")
local o = r.openresty
if o.skipped then
    say("Skipped: %s.", o.skipped)
    target("OpenResty worker", "≥ 0.90 × single-core sign rate", "not run", false, o.skipped)
else
    say("One nginx process (`master_process off`, `worker_processes 1`) whose location "
        .. "assigns a guide per request through `resty.wechatpay`, driven by `wrk -t1 "
        .. "-c%d` for %d s against the sandbox on the same machine.", o.connections,
        r.sizes.wrk_seconds)
    say("")
    say("| figure | value |")
    say("|---|---:|")
    say("| requests (failed) | %d (%d) |", o.requests, o.failed)
    say("| requests per second | %.0f |", o.requests_per_second)
    say("| worker CPU / wall time | %.2f |", o.worker_utilisation)
    say("| worker system (kernel) CPU / worker CPU | %.2f |",
        o.worker_system_seconds / o.worker_cpu_seconds)
    say("| requests per worker CPU second | %.0f |", o.requests_per_cpu_second)
    say("| single-core RSA-2048 signs per CPU second (same run) | %.0f |",
        o.sign_per_second)
    say("| requests per second / sign rate | %s |", x(o.ratio_wall))
    say("| requests per worker CPU second / sign rate | %s |", x(o.ratio_cpu))
    target("OpenResty worker", "≥ 0.90 × single-core sign rate",
        string.format("%s per CPU second, %s per wall second", x(o.ratio_cpu),
            x(o.ratio_wall)), o.ratio_wall >= 0.90,
        string.format("a request costs the worker %s µs of CPU, %s × one sign; the "
            .. "sandbox shares the 2 cores", us(1 / o.requests_per_cpu_second),
            x(o.sign_per_second / o.requests_per_cpu_second)))
end

-- {======================================================================
-- Growth
-- =======================================================================
local g = r.growth
say("")
say("## 4. Growth")
say("")
local mem = g.memory
say("| figure | after %d calls | after %d calls | difference |", mem.samples[1].calls,
    mem.samples[2].calls)
say("|---|---:|---:|---:|")
say("| VmRSS (KiB) | %d | %d | %d |", mem.samples[1].rss_kib, mem.samples[2].rss_kib,
    mem.rss_growth_kib)
say("| Lua heap (KiB) | %.0f | %.0f | %.0f |", mem.samples[1].lua_heap_kib,
    mem.samples[2].lua_heap_kib, mem.lua_heap_growth_kib)
say("")
say("One Lua 5.4 process, one client, guide:assign against the sandbox: %s µs of "
    .. "CPU per call over the whole run, of which %s µs user and %s µs system "
    .. "(kernel) time.", us(mem.cpu_per_call), us(mem.user_per_call),
    us(mem.system_per_call))
target("memory growth, 10k to 100k calls", "< 1 MB", string.format("%d KiB",
    mem.rss_growth_kib), mem.rss_growth_kib < 1024)

local p = g.pages
say("")
say("`each_guide` over %d staff (%d pages) took %s ms of CPU; the same %d pages as "
    .. "single `query_guides` calls took %s ms: ratio %s (per round: %s).", p.staff,
    p.pages, string.format("%.1f", p.each_guide_seconds * 1e3), p.pages,
    string.format("%.1f", p.single_queries_seconds * 1e3), x(p.ratio),
    table.concat((function()
        local list = {}
        for i, v in ipairs(p.round_ratios) do
            list[i] = x(v)
        end
        return list
    end)(), ", "))
target("each_guide against its pages", "≤ 1.1 ×", x(p.ratio), p.ratio <= 1.1)

local s = g.sync
local register_floor = r.cpu_per_call[1].ours.floor.register
local register_call = r.cpu_per_call[1].ours.call.register
say("")
say("`wechatpay-guide sync` of a %d-row CSV file (all new staff) used %.2f s of CPU "
    .. "(the process's user plus system time, start-up included): %s µs per row, %s "
    .. "times the register floor and %s times one register call of the client.",
    s.rows, s.cpu_seconds, us(s.cpu_per_row), x(s.cpu_per_row / register_floor),
    x(s.cpu_per_row / register_call))

-- {======================================================================
-- Targets and chart
-- =======================================================================
say("")
say("## Targets")
say("")
say("| target | wanted | measured | result | note |")
say("|---|---|---|---|---|")
for _, t in ipairs(targets) do
    say("| %s | %s | %s | %s | %s |", t[1], t[2], t[3], t[4], t[5])
end

-- The chart: one panel per mode, floor / ours / SDK for each call type,
-- on one y scale so that the panels compare.
local function write_chart()
    if benchlib.capture("command -v gnuplot") == "" then
        return "gnuplot is not installed (Debian: gnuplot-nox); no chart was drawn"
    end
    local data_path = os.tmpname()
    local rows = {}
    local highest = 0
    for _, run in ipairs(r.cpu_per_call) do
        for _, call in ipairs(CALLS) do
            local values = { run.ours.floor[call] * 1e6, run.ours.call[call] * 1e6,
                run.sdk.call[call] * 1e6 }
            highest = math.max(highest, table.unpack(values))
            rows[#rows + 1] = string.format("%s %.1f %.1f %.1f", call, table.unpack(values))
        end
        rows[#rows + 1] = ""
        rows[#rows + 1] = ""
    end
    benchlib.write_file(data_path, table.concat(rows, "\n"))
    local panels = {}
    for index, run in ipairs(r.cpu_per_call) do
        panels[#panels + 1] = string.format([[
set title "%s"
plot '%s' index %d using 2:xtic(1) title "floor: RSA operations" lc rgb "#999999", \
     '' index %d using 3 title "lua-wechatpay" lc rgb "#1f77b4", \
     '' index %d using 4 title "%s" lc rgb "#d62728"
]], MODE_TITLES[run.label] or run.label, data_path, index - 1, index - 1, index - 1,
            sdk_name)
    end
    local script = string.format([[
set terminal pngcairo size 1500,560 font "DejaVu Sans,11"
set output '%s'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:%d]
set ylabel "client CPU per call (µs)"
set key top left reverse Left samplen 2
set multiplot layout 1,%d title "Client process CPU per call against the sandbox (%s, %s)"
%s
unset multiplot
]], CHART_PATH, math.ceil(highest * 1.35 / 500) * 500, #r.cpu_per_call, m.cpu, m.date,
        table.concat(panels, "\n"))
    local script_path = os.tmpname()
    benchlib.write_file(script_path, script)
    local ok = os.execute("gnuplot " .. benchlib.shell_quote(script_path))
    os.remove(script_path)
    os.remove(data_path)
    if not ok then
        return "gnuplot failed; no chart was drawn"
    end
    return nil
end

local chart_problem = write_chart()
say("")
say("## Chart")
say("")
if chart_problem then
    say("%s.", chart_problem)
else
    say("![client CPU per call](cpu_per_call.png)")
end
say("")
say("The raw figures of this run are in bench/results.json.")

benchlib.write_file(REPORT_PATH, table.concat(out, "\n") .. "\n")
io.stderr:write("bench: wrote " .. REPORT_PATH .. (chart_problem and "" or
    (" and " .. CHART_PATH)) .. "\n")
