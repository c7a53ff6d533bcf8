-- Requests per second of one nginx worker (Debian's nginx with
-- libnginx-mod-http-lua, LuaJIT) whose location assigns a guide per
-- request through require("resty.wechatpay"), driven by wrk, next to the
-- single-core RSA-2048 sign rate measured just before and after.
--
--   lua5.4 bench/openresty.lua SANDBOX_JSON WORK_DIR [SECONDS]
--
-- nginx runs with master_process off, so that its one process is the
-- worker whose CPU time /proc/PID/stat gives.  It listens on 127.0.0.1
-- and its location talks only to the sandbox's base_url.  The module for
-- LuaJIT comes from build-luajit/ (make luajit).  Without
-- lua/resty/wechatpay.lua, nginx or wrk, the RESULT line gives the reason
-- the benchmark was skipped.
local benchlib = require("benchlib")
local core = require("wechatpay.core")
local wechatpay = require("wechatpay")

local config_path, work_dir = arg[1], arg[2]
assert(config_path and work_dir, "usage: openresty.lua SANDBOX_JSON WORK_DIR [SECONDS]")
local seconds = tonumber(arg[3]) or 10
local root = benchlib.capture("pwd"):match("[^\n]+")
local LUA_MODULE_DIR = "/usr/lib/nginx/modules"
-- wrk connections: enough to keep the worker busy while the sandbox,
-- on the other core, responds.
local CONNECTIONS = 8
local SIGN_ROUNDS = 2000

local function skip(reason)
    benchlib.emit({ kind = "openresty", skipped = reason })
    os.exit(0)
end

if not benchlib.exists(root .. "/lua/resty/wechatpay.lua") then
    skip("lua/resty/wechatpay.lua does not exist yet")
end
if not benchlib.exists(root .. "/build-luajit/wechatpay/core.so") then
    skip("build-luajit/wechatpay/core.so is missing (make luajit)")
end
if not benchlib.exists("/usr/sbin/nginx")
    or not benchlib.exists(LUA_MODULE_DIR .. "/ngx_http_lua_module.so") then
    skip("nginx or libnginx-mod-http-lua is not installed")
end
if benchlib.capture("command -v wrk") == "" then
    skip("wrk is not installed")
end

local config = benchlib.load_sandbox(config_path)
local private_key = assert(core.load_private_key(benchlib.read_file(config.private_key_file)))

-- Returns RSA-2048 signatures per CPU second on this core.
local function sign_rate()
    local message = string.rep("m", 200)
    local started = benchlib.cpu()
    for _ = 1, SIGN_ROUNDS do
        private_key:sign(message)
    end
    return SIGN_ROUNDS / (benchlib.cpu() - started)
end

-- The guide every request assigns, registered through the Lua 5.4 client.
local client = assert(wechatpay.new(benchlib.client_options(config)))
local guide = assert(client:register_guide({
    store_id = 1234, corpid = "wwbench", userid = "bench-openresty-" .. benchlib.own_pid(),
    name = "赵六", mobile = "13300000000",
    qr_code = "https://example.com/qr/openresty", avatar = "https://example.com/a.png",
}))
client:close()

-- The client options as Lua source for nginx.conf.
local options = benchlib.client_options(config)
options.shared_dict = "wechatpay"
local option_lines = {}
for name, value in pairs(options) do
    option_lines[#option_lines + 1] = string.format("%s = %q,", name, value)
end
table.sort(option_lines)

os.execute("rm -rf " .. benchlib.shell_quote(work_dir) .. " && mkdir -p "
    .. benchlib.shell_quote(work_dir .. "/logs"))
math.randomseed(os.time(), tonumber(benchlib.own_pid()))

-- Starts nginx on a random loopback port; returns its pid and port, or
-- nil after three ports that would not bind.
local function start_nginx()
    for _ = 1, 3 do
        local port = math.random(20000, 60000)
        local conf = string.format([[
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
daemon off;
master_process off;
worker_processes 1;
error_log %s/logs/error.log warn;
pid %s/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path %s/logs;
    lua_package_path "%s/lua/?.lua;%s/lua/?/init.lua;;";
    lua_package_cpath "%s/build-luajit/?.so;;";
    lua_shared_dict wechatpay 1m;
    init_worker_by_lua_block {
        local wechatpay = require("resty.wechatpay")
        local client = assert(wechatpay.new({
            %s
        }))
        package.loaded.bench_guide = assert(client:guide(%q))
    }
    server {
        listen 127.0.0.1:%d;
        location = /assign {
            content_by_lua_block {
                local count = (package.loaded.bench_count or 0) + 1
                package.loaded.bench_count = count
                local ok, err = package.loaded.bench_guide:assign(
                    "O" .. ngx.worker.pid() .. "-" .. count)
                if not ok then
                    ngx.log(ngx.ERR, "assign failed: ", tostring(err))
                    return ngx.exit(500)
                end
                ngx.status = 204
            }
        }
    }
}
]], LUA_MODULE_DIR, LUA_MODULE_DIR, work_dir, work_dir, work_dir, root, root, root,
            table.concat(option_lines, "\n            "), guide.guide_id, port)
        benchlib.write_file(work_dir .. "/nginx.conf", conf)
        local pid = benchlib.capture(string.format(
            "nginx -p %s -c %s -e %s > %s 2>&1 & echo $!",
            benchlib.shell_quote(work_dir), benchlib.shell_quote(work_dir .. "/nginx.conf"),
            benchlib.shell_quote(work_dir .. "/logs/error.log"),
            benchlib.shell_quote(work_dir .. "/logs/stdout.log"))):match("%d+")
        local http = assert(core.new_http({ timeout = 5 }))
        for _ = 1, 50 do
            benchlib.sleep(0.1)
            local res = http:request("GET", "http://127.0.0.1:" .. port .. "/assign", {})
            if res then
                http:close()
                if res.status ~= 204 then
                    os.execute("kill " .. pid)
                    error("nginx answered " .. res.status .. " to /assign; see "
                        .. work_dir .. "/logs/error.log:\n"
                        .. benchlib.read_file(work_dir .. "/logs/error.log"))
                end
                return pid, port
            end
            if not benchlib.exists("/proc/" .. pid .. "/stat") then
                break
            end
        end
        http:close()
        os.execute("kill " .. pid .. " 2>/dev/null")
    end
    error("nginx did not start; see " .. work_dir .. "/logs/error.log:\n"
        .. benchlib.read_file(work_dir .. "/logs/error.log"))
end

local sign_before = sign_rate()
local pid, port = start_nginx()
local ok, result = pcall(function()
    local url = "http://127.0.0.1:" .. port .. "/assign"
    -- A short warm-up fills the keepalive pool and LuaJIT's traces.
    benchlib.capture(string.format("wrk -t1 -c%d -d1s %s", CONNECTIONS, url))
    local user_before, system_before = benchlib.process_times(pid)
    local wall_before = core.monotonic()
    local out = benchlib.capture(string.format("wrk -t1 -c%d -d%ds %s 2>&1", CONNECTIONS,
        seconds, url))
    local wall = core.monotonic() - wall_before
    local user_after, system_after = benchlib.process_times(pid)
    local worker_user = user_after - user_before
    local worker_system = system_after - system_before
    local worker_cpu = worker_user + worker_system
    local requests = tonumber(out:match("(%d+) requests in"))
    local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
    assert(requests and rps, "cannot read the output of wrk:\n" .. out)
    local failed = tonumber(out:match("Non%-2xx or 3xx responses:%s*(%d+)")) or 0
    local socket_errors = out:match("Socket errors:[^\n]*")
    return {
        requests = requests,
        failed = failed,
        socket_errors = socket_errors,
        requests_per_second = rps,
        wall_seconds = wall,
        worker_cpu_seconds = worker_cpu,
        worker_system_seconds = worker_system,
        worker_utilisation = worker_cpu / wall,
        requests_per_cpu_second = requests / worker_cpu,
        connections = CONNECTIONS,
    }
end)
os.execute("kill " .. pid .. " 2>/dev/null")
if not ok then
    error(result, 0)
end
local sign_after = sign_rate()
result.kind = "openresty"
result.sign_per_second = (sign_before + sign_after) / 2
result.ratio_wall = result.requests_per_second / result.sign_per_second
result.ratio_cpu = result.requests_per_cpu_second / result.sign_per_second
result.nginx_error_log_lines = select(2, benchlib.read_file(work_dir .. "/logs/error.log")
    :gsub("\n", "\n"))
benchlib.emit(result)
