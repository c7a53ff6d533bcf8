-- Growth benchmarks against a running sandbox:
--
--   lua5.4 bench/growth.lua SANDBOX_JSON memory [FIRST] [TOTAL]
--       Resident memory (VmRSS) and Lua heap of this process after FIRST
--       (default 10,000) and after TOTAL (default 100,000) guide:assign
--       calls on one client.
--   lua5.4 bench/growth.lua SANDBOX_JSON pages [STAFF] [ROUNDS]
--       CPU time of each_guide over STAFF (default 1,000) guides of one
--       store, next to the same pages fetched by single query_guides
--       calls, alternating ROUNDS (default 3) times.
--   lua5.4 bench/growth.lua SANDBOX_JSON sync [ROWS]
--       CPU time per row of `wechatpay-guide sync` registering ROWS
--       (default 1,000) new staff from a CSV file.
--
-- Each prints one RESULT line (benchlib.emit).
local benchlib = require("benchlib")
local wechatpay = require("wechatpay")

local config_path, which = arg[1], arg[2]
assert(config_path and which, "usage: growth.lua SANDBOX_JSON memory|pages|sync [...]")
local config = benchlib.load_sandbox(config_path)
local run_id = string.format("%x", os.time() % 0xFFFFFF) .. benchlib.own_pid()

-- Adds a store that no other benchmark uses, so that its listing holds
-- only the staff this run adds.
local function new_store(offset)
    local store_id = 100000 + (tonumber(benchlib.own_pid()) % 10000) * 10 + offset
    benchlib.control(config, "POST", "/sandbox/stores", { store_id = store_id })
    return store_id
end

local function memory(first, total)
    local client = assert(wechatpay.new(benchlib.client_options(config)))
    local guide = assert(client:register_guide({
        store_id = 1234, corpid = "wwbench", userid = "bench-memory-" .. run_id,
        name = "王五", mobile = "13600000000",
        qr_code = "https://example.com/qr/memory", avatar = "https://example.com/a.png",
    }))
    local samples = {}
    local calls_done = 0
    local started = benchlib.cpu()
    local user_before, system_before = benchlib.process_times()
    for _, target in ipairs({ first, total }) do
        while calls_done < target do
            calls_done = calls_done + 1
            assert(guide:assign("M" .. run_id .. "-" .. calls_done))
        end
        samples[#samples + 1] = {
            calls = calls_done,
            rss_kib = benchlib.rss_kib(),
            lua_heap_kib = collectgarbage("count"),
        }
    end
    local cpu_seconds = benchlib.cpu() - started
    local user_after, system_after = benchlib.process_times()
    client:close()
    return {
        kind = "memory",
        samples = samples,
        rss_growth_kib = samples[2].rss_kib - samples[1].rss_kib,
        lua_heap_growth_kib = samples[2].lua_heap_kib - samples[1].lua_heap_kib,
        cpu_per_call = cpu_seconds / total,
        user_per_call = (user_after - user_before) / total,
        system_per_call = (system_after - system_before) / total,
    }
end

local function pages(staff, rounds)
    local store_id = new_store(1)
    for i = 1, staff do
        benchlib.control(config, "POST", "/sandbox/guides", {
            store_id = store_id, name = "员工" .. i,
            mobile = string.format("135%08d", i), userid = "bench-page-" .. i,
        })
    end
    local client = assert(wechatpay.new(benchlib.client_options(config)))
    local page_count = math.ceil(staff / 10)

    local function walk()
        local count = 0
        for guide, err in client:each_guide({ store_id = store_id }) do
            assert(guide, err)
            count = count + 1
        end
        assert(count == staff, "each_guide returned " .. count .. " guides")
    end
    local function singles()
        local count = 0
        for page = 0, page_count - 1 do
            local result = assert(client:query_guides({
                store_id = store_id, limit = 10, offset = page * 10,
            }))
            count = count + #result.data
        end
        assert(count == staff, "the single queries returned " .. count .. " guides")
    end

    -- Warm up both paths once before timing.
    walk()
    singles()
    local each_total, single_total = 0, 0
    local ratios = {}
    for _ = 1, rounds do
        local started = benchlib.cpu()
        walk()
        local each_seconds = benchlib.cpu() - started
        started = benchlib.cpu()
        singles()
        local single_seconds = benchlib.cpu() - started
        each_total = each_total + each_seconds
        single_total = single_total + single_seconds
        ratios[#ratios + 1] = each_seconds / single_seconds
    end
    client:close()
    return {
        kind = "pages",
        staff = staff,
        pages = page_count,
        rounds = rounds,
        each_guide_seconds = each_total / rounds,
        single_queries_seconds = single_total / rounds,
        ratio = each_total / single_total,
        round_ratios = ratios,
    }
end

-- Returns the CPU seconds (user plus system) that a shell command's
-- child processes used, from the shell's `times` builtin.
local function child_cpu(command)
    local out = benchlib.capture("sh -c " .. benchlib.shell_quote(command
        .. " > /dev/null 2>&1; echo status $?; times"))
    local status = tonumber(out:match("status (%d+)"))
    local lines = {}
    for line in out:gmatch("[^\n]+") do
        lines[#lines + 1] = line
    end
    -- The last line of `times` is the children's user and system time,
    -- written as 0m1.234s by dash and bash alike.
    local total = 0
    for minutes, seconds in lines[#lines]:gmatch("(%d+)m([%d.]+)s") do
        total = total + tonumber(minutes) * 60 + tonumber(seconds)
    end
    return total, status
end

local function sync(rows)
    local store_id = new_store(2)
    local dir = config_path:match("^(.*)/[^/]*$") or "."
    local csv_path = dir .. "/sync-" .. run_id .. ".csv"
    local lines = { "userid,name,mobile,qr_code,avatar" }
    for i = 1, rows do
        lines[#lines + 1] = string.format("bench-sync-%d,员工%d,134%08d,"
            .. "https://example.com/qr/%d,https://example.com/a/%d.png", i, i, i, i, i)
    end
    benchlib.write_file(csv_path, table.concat(lines, "\n") .. "\n")
    local command = string.format("lua5.4 bin/wechatpay-guide --config %s sync %s "
        .. "--store-id %d --corpid wwbench --quiet --format csv",
        benchlib.shell_quote(config_path), benchlib.shell_quote(csv_path), store_id)
    local seconds, status = child_cpu(command)
    assert(status == 0, "wechatpay-guide sync exited with status " .. tostring(status))
    local registered = benchlib.control(config, "GET", "/sandbox/guides")
    local count = 0
    for _, guide in ipairs(registered) do
        if guide.store_id == store_id then
            count = count + 1
        end
    end
    assert(count == rows, "sync registered " .. count .. " of " .. rows .. " rows")
    os.remove(csv_path)
    os.remove(csv_path .. ".journal")
    return { kind = "sync", rows = rows, cpu_seconds = seconds, cpu_per_row = seconds / rows }
end

local result
if which == "memory" then
    result = memory(tonumber(arg[3]) or 10000, tonumber(arg[4]) or 100000)
elseif which == "pages" then
    result = pages(tonumber(arg[3]) or 1000, tonumber(arg[4]) or 3)
elseif which == "sync" then
    result = sync(tonumber(arg[3]) or 1000)
else
    error("unknown benchmark " .. which .. "; expected memory, pages or sync")
end
result.mode = config.mode
benchlib.emit(result)
