-- OpenResty: resty.wechatpay inside a real nginx (Debian's nginx with
-- libnginx-mod-http-lua) against the bundled sandbox.  The spec writes an
-- nginx.conf into a temporary prefix and starts nginx on a loopback port.
-- It posts Lua chunks to /run, which spec/support/openresty_app.lua runs
-- in a request handler, and checks the results here, under Lua 5.4.
local core = require("wechatpay.core")
local cqueues = require("cqueues")
local helper = require("helper")
local verification_cases = require("support.verification_cases")
local secrets = require("support.secrets")
local socket = require("cqueues.socket")

local format = string.format

local ROOT = helper.run("pwd"):gsub("%s+$", "")
local NGINX_MODULES = os.getenv("WXP_NGINX_MODULES") or "/usr/lib/nginx/modules"

-- Builds build-luajit/wechatpay/core.so once; errors when it cannot.
local built = false
local function build_luajit_module()
    if not built then
        local out, ok = helper.run("make --no-print-directory luajit 2>&1")
        assert(ok, "make luajit failed:\n" .. out)
        built = true
    end
end

local function free_port()
    local server = socket.listen({ host = "127.0.0.1", port = 0 })
    assert(server:listen())
    local _, _, port = server:localname()
    server:close()
    return port
end

local CONF = [[
load_module ${modules}/ndk_http_module.so;
load_module ${modules}/ngx_http_lua_module.so;
daemon on;
master_process on;
worker_processes ${workers};
pid logs/nginx.pid;
error_log logs/error.log info;
events {
    worker_connections 512;
}
http {
    access_log off;
    client_body_temp_path ${prefix}/temp/body;
    proxy_temp_path ${prefix}/temp/proxy;
    fastcgi_temp_path ${prefix}/temp/fastcgi;
    uwsgi_temp_path ${prefix}/temp/uwsgi;
    scgi_temp_path ${prefix}/temp/scgi;
    client_body_buffer_size 64k;
    lua_package_path "${root}/lua/?.lua;${root}/spec/support/?.lua;;";
    lua_package_cpath "${root}/build-luajit/?.so;;";
    lua_socket_log_errors off;
    lua_shared_dict harness 64k;
    lua_shared_dict wechatpay 1m;
    ${tls}
    init_by_lua_block {
        require("openresty_app").init("${prefix}/harness.json")
    }
    init_worker_by_lua_block {
        require("openresty_app").init_worker()
    }
    server {
        listen 127.0.0.1:${port}${reuseport};
        location = /run {
            content_by_lua_block { require("openresty_app").run() }
        }
        location = /run-untrusted {
            lua_ssl_trusted_certificate ${other_ca};
            content_by_lua_block { require("openresty_app").run() }
        }
        location = /curl_calls {
            content_by_lua_block { require("openresty_app").curl_calls() }
        }
    }
}
]]

-- A CA that signed nothing the sandbox uses, for /run-untrusted.
local function other_ca(dir)
    local key = core.generate_test_key(2048)
    local now = os.time()
    return helper.write(dir .. "/other_ca.pem", assert(core.issue_test_certificate({
        key = key, serial = "0A0B", common_name = "Other Test CA",
        not_before = now - 60, not_after = now + 86400, ca = true,
    })))
end

local function process_alive(pid)
    return os.execute("kill -0 " .. pid .. " 2>/dev/null") == true
end

-- Starts nginx.  opts: workers (default 1), reuseport, ca_file (the
-- sandbox CA for lua_ssl_trusted_certificate), sandboxes (name -> sandbox
-- handle), clients (name -> { sandbox, options, timer }).  Returns a
-- handle with port, run(chunk), run_untrusted(chunk), curl_calls(),
-- error_log() and stop().
local function start_nginx(opts)
    build_luajit_module()
    local prefix = helper.tmpdir()
    assert(os.execute("chmod 755 " .. prefix .. " && mkdir -p " .. prefix .. "/logs "
        .. prefix .. "/conf " .. prefix .. "/temp"))
    local sandboxes = {}
    for name, sandbox in pairs(opts.sandboxes) do
        sandboxes[name] = sandbox.dir .. "/sandbox.json"
    end
    helper.write(prefix .. "/harness.json", assert(core.json_encode({
        sandboxes = sandboxes, clients = opts.clients,
    })))

    -- Workers load lua_ssl_trusted_certificate after dropping root, and
    -- the sandbox's folder is private: give them a copy.
    local ca_file = opts.ca_file and helper.write(prefix .. "/sandbox_ca.pem",
        helper.read(opts.ca_file), "644")

    local handle = { prefix = prefix }
    local values = {
        modules = NGINX_MODULES, workers = tostring(opts.workers or 1), prefix = prefix,
        root = ROOT, reuseport = opts.reuseport and " reuseport" or "",
        other_ca = other_ca(prefix),
        tls = ca_file and format("lua_ssl_trusted_certificate %s;\n"
            .. "    lua_ssl_verify_depth 2;", ca_file) or "",
    }
    for _ = 1, 3 do
        values.port = tostring(free_port())
        helper.write(prefix .. "/conf/nginx.conf", (CONF:gsub("%${([%w_]+)}", values)))
        local out, ok = helper.run(format("nginx -p %s -c conf/nginx.conf -e logs/error.log "
            .. "2>&1", helper.shell_quote(prefix)))
        if ok then
            handle.port = tonumber(values.port)
            break
        end
        -- Another process may have taken the port; anything else is fatal.
        assert(out:find("Address already in use", 1, true), "nginx did not start:\n" .. out)
    end
    assert(handle.port, "nginx found no free port")
    for _ = 1, 100 do
        if helper.exists(prefix .. "/logs/nginx.pid") then
            break
        end
        helper.sleep(0.02)
    end
    handle.pid = helper.read(prefix .. "/logs/nginx.pid"):match("%d+")
    assert(handle.pid, "nginx wrote no pid file")

    local http = assert(core.new_http({ timeout = 20 }))
    local base = "http://127.0.0.1:" .. handle.port

    -- A worker that fails to start leaves the port accepting connections
    -- that nobody serves: wait for a response, and stop at a fatal line.
    local up = false
    for _ = 1, 50 do
        local res = http:request("GET", base .. "/curl_calls", {}, nil, { timeout = 0.5 })
        if res and res.status == 200 then
            up = true
            break
        end
        local log = helper.read(prefix .. "/logs/error.log")
        if log:find("%[emerg%]") or log:find("%[alert%]") then
            break
        end
    end
    if not up then
        os.execute("kill " .. handle.pid .. " 2>/dev/null")
        error("nginx does not answer:\n" .. helper.read(prefix .. "/logs/error.log"))
    end

    local function post(path, chunk)
        local res, code, message = http:request("POST", base .. path,
            { "Content-Type: text/plain" }, chunk)
        assert(res, "request to nginx failed: " .. tostring(code) .. " " .. tostring(message))
        assert(res.status == 200, "nginx answered " .. res.status .. ": " .. res.body)
        return assert(core.json_decode(res.body))
    end

    -- Runs chunk in nginx; returns its result, and raises with the
    -- chunk's error when it raised.
    function handle.run(chunk)
        local answer = post("/run", chunk)
        assert(answer.ok, "chunk failed in nginx: " .. tostring(answer.error))
        return answer.result, answer.pid
    end

    function handle.run_untrusted(chunk)
        local answer = post("/run-untrusted", chunk)
        assert(answer.ok, "chunk failed in nginx: " .. tostring(answer.error))
        return answer.result
    end

    function handle.curl_calls()
        local res = assert(http:request("GET", base .. "/curl_calls", {}))
        return tonumber(res.body)
    end

    function handle.error_log()
        return helper.read(prefix .. "/logs/error.log")
    end

    -- Lines at [error], [alert] or [emerg].
    function handle.bad_log_lines()
        local bad = {}
        for line in handle.error_log():gmatch("[^\n]+") do
            if line:find("%[error%]") or line:find("%[alert%]") or line:find("%[emerg%]") then
                bad[#bad + 1] = line
            end
        end
        return bad
    end

    -- Stops the master (which stops the workers) by its PID.
    function handle.stop()
        http:close()
        os.execute("kill -TERM " .. handle.pid .. " 2>/dev/null")
        for _ = 1, 250 do
            if not process_alive(handle.pid) then
                break
            end
            helper.sleep(0.02)
        end
        if process_alive(handle.pid) then
            os.execute("kill -KILL " .. handle.pid .. " 2>/dev/null")
        end
        -- What the library logged through ngx.log, for the secrets scan.
        secrets.capture(handle.error_log())
    end

    return handle
end

-- Posts chunk to /run n times at once over separate connections.
-- Returns the decoded responses and the seconds all of them took.
local function run_concurrently(nginx, chunk, n)
    local request = format("POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n"
        .. "Connection: close\r\n\r\n%s", #chunk, chunk)
    local raw = {}
    local cq = cqueues.new()
    local started = core.monotonic()
    for i = 1, n do
        cq:wrap(function()
            local conn = assert(socket.connect({ host = "127.0.0.1", port = nginx.port }))
            conn:setmode("b", "b")
            assert(conn:write(request))
            assert(conn:flush())
            raw[i] = conn:read("*a")
            conn:close()
        end)
    end
    assert(cq:loop(60))
    local elapsed = core.monotonic() - started
    local answers = {}
    for i = 1, n do
        local body = raw[i] and raw[i]:match("\r\n\r\n(.*)$")
        answers[i] = body and core.json_decode(body) or { ok = false, error = raw[i] }
    end
    return answers, elapsed
end

local requests_to = helper.requests_to
local last_request = helper.last_request

local function stored_guide(sandbox, guide_id)
    for _, guide in ipairs(sandbox.control("GET", "/sandbox/guides")) do
        if guide.guide_id == guide_id then
            return guide
        end
    end
    return nil
end

-- {======================================================================
-- One worker: the staff calls, failures, transport and numbers
-- =======================================================================

describe("resty.wechatpay in nginx", function()
    local cert_sandbox, key_sandbox, tls_sandbox, nginx

    setup(function()
        cert_sandbox = helper.start_sandbox({ mode = "certificate" })
        key_sandbox = helper.start_sandbox({ mode = "public_key" })
        tls_sandbox = helper.start_sandbox({ mode = "public_key", tls = true })
        nginx = start_nginx({
            ca_file = tls_sandbox.config.ca_file,
            sandboxes = { cert = cert_sandbox, key = key_sandbox, tls = tls_sandbox },
            clients = {
                certificate = { sandbox = "cert" },
                public_key = { sandbox = "key" },
                tls = { sandbox = "tls" },
            },
        })
    end)

    teardown(function()
        if nginx then
            nginx.stop()
        end
        for _, sandbox in ipairs({ cert_sandbox, key_sandbox, tls_sandbox }) do
            sandbox.stop()
        end
        helper.cleanup()
    end)

    for _, mode in ipairs({ "certificate", "public_key" }) do
        describe("staff calls in " .. mode .. " mode", function()
            local sandbox

            before_each(function()
                sandbox = mode == "certificate" and cert_sandbox or key_sandbox
            end)

            -- Runs chunk with client bound to this mode's client.
            local function run(chunk)
                return nginx.run(format("local client = clients[%q]\n%s", mode, chunk))
            end

            local function expected_serial()
                if mode == "certificate" then
                    return sandbox.config.platform_serial
                end
                return sandbox.config.public_key_id
            end

            it("registers a guide with a Chinese name", function()
                local result = run([[
                    local guide, err = client:register_guide(fields("reg1", { name = "张三丰" }))
                    return { guide_id = guide and guide.guide_id, err = err }
                ]])
                assert.is_nil(result.err)
                assert.matches("^LLA", result.guide_id)
                local stored = stored_guide(sandbox, result.guide_id)
                assert.equals("张三丰", stored.name)
                assert.equals("13800138000", stored.mobile)
                assert.equals(1234, stored.store_id)
                local req = last_request(sandbox)
                assert.equals(expected_serial(), req.headers["wechatpay-serial"])
                assert.matches("^lua%-wechatpay/.* ngx_lua/", req.headers["user-agent"])
                assert.equals(200, req.status)
            end)

            it("queries a guide by userid and decrypts it", function()
                local result = run([[
                    local guide = assert(client:register_guide(fields("query1", {
                        name = "李四", mobile = "13900000001" })))
                    local page, err = client:query_guides({ store_id = 1234, userid = "query1" })
                    return { guide_id = guide.guide_id, page = page, err = err }
                ]])
                assert.is_nil(result.err)
                assert.equals(1, result.page.total_count)
                local found = result.page.data[1]
                assert.equals(result.guide_id, found.guide_id)
                assert.equals("李四", found.name)
                assert.equals("13900000001", found.mobile)
                assert.equals("query1", found.userid)
            end)

            it("queries by mobile with the ciphertext percent-encoded", function()
                local result = run([[
                    local guide = assert(client:register_guide(fields("query2", {
                        mobile = "13900000002" })))
                    local page, err = client:query_guides({ store_id = 1234,
                        mobile = "13900000002" })
                    return { guide_id = guide.guide_id, found = page and page.data[1].guide_id,
                        err = err }
                ]])
                assert.is_nil(result.err)
                assert.equals(result.guide_id, result.found)
                local req = last_request(sandbox)
                local encoded = req.target:match("mobile=([^&]+)")
                assert.truthy(encoded)
                assert.not_matches("[+/=]", encoded)
                assert.equals(expected_serial(), req.headers["wechatpay-serial"])
            end)

            it("assigns a guide to an order", function()
                local result = run([[
                    local guide = assert(client:register_guide(fields("assign1")))
                    local ok, err = guide:assign("NGX-ORDER_1|*")
                    return { guide_id = guide.guide_id, ok = ok, err = err }
                ]])
                assert.is_nil(result.err)
                assert.is_true(result.ok)
                local found = false
                for _, a in ipairs(sandbox.control("GET", "/sandbox/assignments")) do
                    if a.guide_id == result.guide_id and a.out_trade_no == "NGX-ORDER_1|*" then
                        found = true
                    end
                end
                assert.is_true(found)
            end)

            it("assigns through client:guide(id)", function()
                local result = run([[
                    local registered = assert(client:register_guide(fields("assign2")))
                    local guide = assert(client:guide(registered.guide_id))
                    return { ok = guide:assign("NGX2") }
                ]])
                assert.is_true(result.ok)
            end)

            it("updates name and mobile", function()
                local result = run([[
                    local guide = assert(client:register_guide(fields("update1")))
                    local ok, err = guide:update({ name = "王五", mobile = "13700000003",
                        avatar = "https://wx.qlogo.cn/mmopen/ngx/1" })
                    local page = assert(client:query_guides({ store_id = 1234,
                        userid = "update1" }))
                    return { guide_id = guide.guide_id, ok = ok, err = err,
                        name = page.data[1].name }
                ]])
                assert.is_nil(result.err)
                assert.is_true(result.ok)
                local stored = stored_guide(sandbox, result.guide_id)
                assert.equals("王五", stored.name)
                assert.equals("13700000003", stored.mobile)
                assert.equals("https://wx.qlogo.cn/mmopen/ngx/1", stored.avatar)
                assert.equals("王五", result.name)
            end)

            it("walks every guide of a store with each_guide", function()
                sandbox.control("POST", "/sandbox/stores", { store_id = 5678 })
                local result = run([[
                    local registered = {}
                    for i = 1, 23 do
                        local guide = assert(client:register_guide(fields("walk" .. i,
                            { store_id = 5678, name = "员工" .. i })))
                        registered[guide.guide_id] = "员工" .. i
                    end
                    local seen, wrong, failure = 0, 0, nil
                    for guide, err in client:each_guide({ store_id = 5678 }) do
                        if not guide then
                            failure = err
                        elseif registered[guide.guide_id] ~= guide.name then
                            wrong = wrong + 1
                        else
                            seen = seen + 1
                        end
                    end
                    return { seen = seen, wrong = wrong, err = failure }
                ]])
                assert.is_nil(result.err)
                assert.equals(0, result.wrong)
                assert.equals(23, result.seen)
            end)

            it("calls any path with request", function()
                local result = run([[
                    local res, err = client:request("GET", "/v3/smartguide/guides", {
                        query = { store_id = 1234, limit = 1 } })
                    return { status = res and res.status, limit = res and res.data.limit,
                        request_id = res and res.request_id, err = err }
                ]])
                assert.is_nil(result.err)
                assert.equals(200, result.status)
                assert.equals(1, result.limit)
                assert.truthy(result.request_id)
            end)

            it("returns the platform's error for an unknown store", function()
                local result = run([[
                    local guide, err = client:register_guide(fields("nostore",
                        { store_id = 999 }))
                    return { guide = guide ~= nil, err = err }
                ]])
                assert.is_false(result.guide)
                assert.equals("api", result.err.kind)
                assert.equals(400, result.err.status)
                assert.equals("PARAM_ERROR", result.err.code)
                assert.matches("门店id不存在", result.err.message)
                assert.truthy(result.err.request_id)
            end)

            it("returns 404 for assigning an unknown guide", function()
                local result = run([[
                    local ok, err = client:guide("LLANOSUCHGUIDE"):assign("X1")
                    return { ok = ok, err = err }
                ]])
                assert.is_nil(result.ok)
                assert.equals("api", result.err.kind)
                assert.equals(404, result.err.status)
            end)

            it("encrypts for the platform, not for the merchant", function()
                local result = run([[
                    local cipher, serial = assert(client:encrypt("13800138000"))
                    local plain, err = client:decrypt(cipher)
                    return { serial = serial, plain = plain, err = err }
                ]])
                assert.equals(expected_serial(), result.serial)
                assert.is_nil(result.plain)
                assert.equals("decrypt", result.err.kind)
            end)

            it("downloads certificates only in certificate mode", function()
                local downloads = #requests_to(sandbox, "/v3/certificates")
                local listed = run("return client:certificates()")
                if mode == "public_key" then
                    assert.equals(0, downloads)
                    assert.equals("public_key", listed[1].source)
                else
                    assert.equals(1, downloads)
                    assert.equals(sandbox.config.platform_serial, listed[1].serial)
                    assert.equals("download", listed[1].source)
                end
            end)
        end)
    end

    describe("verification failures", function()
        after_each(function()
            cert_sandbox.control("DELETE", "/sandbox/faults")
            cert_sandbox.control("POST", "/sandbox/clock", { skew = 0 })
        end)

        -- Arms fault, queries once (expected to fail) and once more
        -- (expected to work).  Returns the first error and the number
        -- of certificate downloads that both queries caused.
        local function query_with_fault(fault)
            local before = #requests_to(cert_sandbox, "/v3/certificates")
            cert_sandbox.control("POST", "/sandbox/faults", fault)
            local result = nginx.run([[
                local client = clients.certificate
                local page, err = client:query_guides({ store_id = 1234 })
                local again = client:query_guides({ store_id = 1234 })
                return { failed = page == nil, err = err, again = again ~= nil }
            ]])
            assert.is_true(result.failed)
            assert.is_true(result.again)
            return result.err, #requests_to(cert_sandbox, "/v3/certificates") - before
        end

        for _, case in ipairs(verification_cases) do
            it(case.name, function()
                case.check(query_with_fault(case.fault))
            end)
        end

        it("is refused by the platform when the clock is off", function()
            cert_sandbox.control("POST", "/sandbox/clock", { skew = 400 })
            local result = nginx.run([[
                local page, err = clients.certificate:query_guides({ store_id = 1234 })
                return { err = err }
            ]])
            assert.equals("api", result.err.kind)
            assert.equals(401, result.err.status)
            assert.equals("SIGN_ERROR", result.err.code)
        end)
    end)

    describe("network failures", function()
        after_each(function()
            key_sandbox.control("DELETE", "/sandbox/faults")
        end)

        -- Runs chunk with client = a public key client without retries,
        -- changed by the options in extra (Lua source).
        local function run_without_retries(extra, chunk)
            return nginx.run(format([[
                local client = assert(new_client("public_key", { retries = 0, %s }))
                %s
            ]], extra, chunk))
        end

        local QUERY = [[
            local page, err = client:query_guides({ store_id = 1234 })
            local again = client:query_guides({ store_id = 1234 })
            return { failed = page == nil, err = err, again = again ~= nil }
        ]]

        it("times out when no answer comes", function()
            key_sandbox.control("POST", "/sandbox/faults", { fault = "hang",
                path = "/v3/smartguide/guides" })
            local started = core.monotonic()
            local result = run_without_retries("timeout = 1", QUERY)
            assert.is_true(result.failed)
            assert.equals("network", result.err.kind)
            assert.equals("timeout", result.err.reason)
            assert.is_true(core.monotonic() - started < 5)
        end)

        it("reports a truncated body", function()
            key_sandbox.control("POST", "/sandbox/faults", { fault = "truncate",
                path = "/v3/smartguide/guides" })
            local result = run_without_retries("", QUERY)
            assert.equals("truncated", result.err.reason)
            assert.is_true(result.again)
        end)

        it("refuses a body over max_response_size", function()
            -- Without the guides of earlier specs, a normal answer fits.
            key_sandbox.control("POST", "/sandbox/reset")
            key_sandbox.control("POST", "/sandbox/faults", { fault = "oversize", bytes = 8192,
                path = "/v3/smartguide/guides" })
            local result = run_without_retries("max_response_size = 4096", [[
                local page, err = client:query_guides({ store_id = 1234 })
                local again, again_err = client:query_guides({ store_id = 1234 })
                return { err = err, again = again ~= nil, again_err = again_err }
            ]])
            assert.is_nil(result.again_err)
            assert.equals("too_large", result.err.reason)
            assert.matches("4096", result.err.message)
            assert.is_true(result.again)
        end)

        it("reports a connection closed without an answer", function()
            key_sandbox.control("POST", "/sandbox/faults", { fault = "reset", count = 2,
                path = "/v3/smartguide/guides" })
            local result = run_without_retries("", [[
                local guide, err = client:register_guide(fields("reset1"))
                return { err = err }
            ]])
            assert.equals("network", result.err.kind)
            assert.equals("reset", result.err.reason)
            assert.is_true(result.err.sent)
        end)

        it("never sends a registration twice on its own", function()
            -- The request log keeps 100 entries: start from an empty one.
            key_sandbox.control("POST", "/sandbox/reset")
            local before = #requests_to(key_sandbox, "/v3/smartguide/guides")
            key_sandbox.control("POST", "/sandbox/faults", { fault = "reset", count = 1,
                method = "POST", path = "/v3/smartguide/guides" })
            local result = run_without_retries("", [[
                -- Leaves a connection in the pool first.
                assert(client:query_guides({ store_id = 1234 }))
                local guide, err = client:register_guide(fields("once1"))
                return { err = err }
            ]])
            assert.equals("reset", result.err.reason)
            assert.equals(before + 2, #requests_to(key_sandbox, "/v3/smartguide/guides"))
        end)

        it("reports a refused connection as not sent", function()
            local result = run_without_retries("base_url = 'http://127.0.0.1:1'", [[
                local page, err = client:query_guides({ store_id = 1234 })
                return { err = err }
            ]])
            assert.equals("network", result.err.kind)
            assert.equals("connect", result.err.reason)
            assert.is_false(result.err.sent)
        end)

        it("reports a host that needs a resolver", function()
            local result = run_without_retries("base_url = 'https://sandbox.invalid:1'", [[
                local page, err = client:query_guides({ store_id = 1234 })
                return { err = err }
            ]])
            assert.equals("resolve", result.err.reason)
            assert.is_false(result.err.sent)
        end)

        it("retries a GET on the backup host after a refused connection", function()
            local result = nginx.run(format([[
                local client = assert(new_client("public_key", {
                    base_url = "http://127.0.0.1:1", backup_base_url = %q,
                    retry_delay = 0.01 }))
                local page, err = client:query_guides({ store_id = 1234 })
                return { ok = page ~= nil, err = err }
            ]], key_sandbox.base_url))
            assert.is_nil(result.err)
            assert.is_true(result.ok)
        end)
    end)

    describe("cosocket transport", function()
        -- Sends requests straight through the transport; returns what each
        -- returned.
        local function send_all(requests)
            return nginx.run(format([[
                local transport = require("wechatpay.transport.cosocket").new({
                    pool = "spec", max_response_size = 4096 })
                local out = {}
                for i, req in ipairs(%s) do
                    local res, err = transport:send(req)
                    out[i] = { res = res, err = err }
                end
                return out
            ]], requests))
        end

        it("reuses pooled connections for idempotent requests only", function()
            local url = key_sandbox.base_url .. "/sandbox/health"
            local out = send_all(format([[{
                { method = "GET", url = %q, timeout = 5, idempotent = true },
                { method = "GET", url = %q, timeout = 5, idempotent = true },
                { method = "POST", url = %q, body = "{}", timeout = 5, idempotent = false },
                { method = "POST", url = %q, body = "{}", timeout = 5, idempotent = true },
            }]], url, url, url, url))
            for i = 1, 4 do
                assert.is_nil(out[i].err)
            end
            assert.equals(200, out[1].res.status)
            assert.is_false(out[2].res.reused == false)
            assert.is_true(out[2].res.reused)
            assert.is_false(out[3].res.reused)
            assert.is_true(out[4].res.reused)
        end)

        describe("against a scripted server", function()
            local dir, response_file, server_pid, port

            setup(function()
                dir = helper.tmpdir()
                response_file = dir .. "/response"
                helper.write(response_file, "")
                local port_file = dir .. "/port"
                server_pid = helper.run(format("lua5.4 spec/support/raw_server.lua %s %s "
                    .. "> %s 2>&1 & echo $!", response_file, port_file, dir .. "/log"))
                    :match("%d+")
                for _ = 1, 100 do
                    if helper.exists(port_file) and helper.read(port_file):match("%d+") then
                        break
                    end
                    helper.sleep(0.02)
                end
                port = helper.read(port_file):match("%d+")
            end)

            teardown(function()
                os.execute("kill " .. server_pid .. " 2>/dev/null")
            end)

            local function answer_with(bytes)
                helper.write(response_file, bytes)
                local out = send_all(format([[{
                    { method = "GET", url = "http://127.0.0.1:%s/x", timeout = 2,
                      idempotent = true },
                }]], port))
                return out[1].res, out[1].err
            end

            it("reads a chunked body and drops the trailers", function()
                local res, err = answer_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    .. "Request-ID: r1\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\n"
                    .. "Trailer-Field: x\r\n\r\n")
                assert.is_nil(err)
                assert.equals("hello, world", res.body)
                assert.equals("r1", res.headers["request-id"])
                assert.is_nil(res.headers["trailer-field"])
            end)

            it("skips an interim 100 response", function()
                local res = answer_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content"
                    .. "\r\nA: 1\r\na: 2\r\n\r\n")
                assert.equals(204, res.status)
                assert.equals("", res.body)
                assert.equals("1, 2", res.headers.a)
            end)

            it("reads a body until the connection closes", function()
                local res = answer_with("HTTP/1.0 200 OK\r\n\r\nuntil close")
                assert.equals("until close", res.body)
            end)

            it("reports a short Content-Length body as truncated", function()
                local _, err = answer_with("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                assert.equals("truncated", err.reason)
                assert.matches("3 of 10", err.message)
            end)

            it("reports a chunked body cut short as truncated", function()
                local _, err = answer_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                    .. "\r\n\r\n5\r\nhel")
                assert.equals("truncated", err.reason)
            end)

            it("refuses a chunked body over the size cap", function()
                local _, err = answer_with("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                    .. "\r\n\r\n1001\r\n" .. ("x"):rep(4097) .. "\r\n0\r\n\r\n")
                assert.equals("too_large", err.reason)
            end)

            it("refuses a response that is not HTTP", function()
                local _, err = answer_with("SSH-2.0-OpenSSH\r\n\r\n")
                assert.equals("protocol", err.reason)
            end)

            it("refuses more than 100 headers", function()
                local _, err = answer_with("HTTP/1.1 200 OK\r\n" .. ("X: y\r\n"):rep(101)
                    .. "Content-Length: 0\r\n\r\n")
                assert.equals("protocol", err.reason)
                assert.matches("100 headers", err.message)
            end)

            it("reports a connection closed before any answer", function()
                local _, err = answer_with("")
                assert.equals("reset", err.reason)
                assert.is_true(err.sent)
            end)
        end)
    end)

    describe("numbers under LuaJIT", function()
        it("encodes integers up to 2^53 - 1 exactly", function()
            local result = nginx.run([[
                return { text = core.json_encode({ a = 2^53 - 1, b = -(2^53 - 1), c = 1234 }) }
            ]])
            assert.equals('{"a":9007199254740991,"b":-9007199254740991,"c":1234}',
                result.text)
        end)

        it("refuses to encode an integer beyond 2^53 - 1", function()
            local result = nginx.run([[
                local text, err = core.json_encode({ store_id = 2^53 })
                return { text = text, err = err }
            ]])
            assert.is_nil(result.text)
            assert.matches("store_id: number 9007199254740992 is outside", result.err)
        end)

        it("refuses to decode an integer beyond 2^53 - 1", function()
            local result = nginx.run([[
                local value, err = core.json_decode('{"total_count": 9007199254740993}')
                local ok = core.json_decode('{"total_count": 9007199254740991}')
                return { value = value, err = err, ok = ok.total_count == 2^53 - 1 }
            ]])
            assert.is_nil(result.value)
            assert.matches('integer 9007199254740993 at byte 17 %(key "total_count"%)',
                result.err)
            assert.is_true(result.ok)
        end)

        it("rejects a store_id beyond 2^53 - 1 as input", function()
            local result = nginx.run([[
                local guide, err = clients.public_key:register_guide(fields("big",
                    { store_id = 2^53 }))
                local page, qerr = clients.public_key:query_guides({ store_id = 1234.0,
                    limit = 10.0 })
                return { err = err, page = page ~= nil, qerr = qerr }
            ]])
            assert.equals("input", result.err.kind)
            assert.equals("store_id", result.err.field)
            assert.matches("2^53", result.err.message, 1, true)
            assert.is_nil(result.qerr)
            assert.is_true(result.page)
        end)

        it("rejects a request body with a number beyond 2^53 - 1", function()
            local result = nginx.run([[
                local res, err = clients.public_key:request("POST", "/v3/smartguide/guides",
                    { body = { store_id = 2^60 } })
                return { err = err }
            ]])
            assert.equals("input", result.err.kind)
            assert.matches("body: store_id: number", result.err.message)
        end)
    end)

    describe("options", function()
        it("rejects ca_file and proxy with the nginx way instead", function()
            local result = nginx.run([[
                local _, ca_err = new_client("public_key", { ca_file = "/etc/ssl/ca.pem" })
                local _, proxy_err = new_client("public_key", { proxy = "http://127.0.0.1:3" })
                return { ca = ca_err, proxy = proxy_err }
            ]])
            assert.equals("config", result.ca.kind)
            assert.equals("ca_file", result.ca.field)
            assert.matches("lua_ssl_trusted_certificate", result.ca.message)
            assert.equals("proxy", result.proxy.field)
        end)

        it("rejects an unknown shared dict and a bad pool size", function()
            local result = nginx.run([[
                local _, dict_err = new_client("certificate", { shared_dict = "nosuch" })
                local _, pool_err = new_client("certificate", { pool_size = 0 })
                local _, keep_err = new_client("certificate", { keepalive_timeout = "1" })
                local _, nan_err = new_client("certificate", { keepalive_timeout = 0 / 0 })
                local _, unknown_err = new_client("certificate", { pool = 3 })
                return { dict = dict_err, pool = pool_err, keep = keep_err,
                    nan = nan_err, unknown = unknown_err }
            ]])
            assert.equals("shared_dict", result.dict.field)
            assert.matches("nosuch", result.dict.message)
            assert.equals("pool_size", result.pool.field)
            assert.equals("keepalive_timeout", result.keep.field)
            assert.equals("keepalive_timeout", result.nan.field)
            assert.equals("pool", result.unknown.field)
        end)

        it("uses a transport function the caller gives", function()
            local result = nginx.run([[
                local cosocket = require("wechatpay.transport.cosocket").new({})
                local seen = {}
                local client = assert(new_client("public_key", { transport = function(req)
                    seen[#seen + 1] = req.method .. " " .. req.url:match("//[^/]+(/[^?]*)")
                    return cosocket:send(req)
                end }))
                local page, err = client:query_guides({ store_id = 1234 })
                return { seen = seen, ok = page ~= nil, err = err }
            ]])
            assert.is_nil(result.err)
            assert.is_true(result.ok)
            assert.same({ "GET /v3/smartguide/guides" }, result.seen)
        end)
    end)

    describe("TLS", function()
        it("works with lua_ssl_trusted_certificate naming the CA", function()
            assert.matches("^https://localhost:", tls_sandbox.base_url)
            local result = nginx.run([[
                local page, err = clients.tls:query_guides({ store_id = 1234 })
                return { ok = page ~= nil, err = err }
            ]])
            assert.is_nil(result.err)
            assert.is_true(result.ok)
        end)

        it("refuses the server under another CA", function()
            -- Its own pool: a pooled connection from /run was verified
            -- under the sandbox CA already.  On loopback about one
            -- handshake in a hundred completes in its first call
            -- (measured), a case that most runs of 300 attempts reach.
            local result = nginx.run_untrusted([[
                local transport = require("wechatpay.transport.cosocket").new({
                    pool = "untrusted" })
                local client = assert(new_client("tls", { retries = 0,
                    transport = function(req) return transport:send(req) end }))
                local first
                local reasons = {}
                for _ = 1, 300 do
                    local _, err = client:query_guides({ store_id = 1234 })
                    first = first or err
                    local reason = err and err.reason or "none"
                    reasons[reason] = (reasons[reason] or 0) + 1
                end
                return { err = first, reasons = reasons }
            ]])
            assert.equals("network", result.err.kind)
            assert.equals("tls", result.err.reason, result.err.message)
            assert.is_false(result.err.sent)
            assert.same({ tls = 300 }, result.reasons)
        end)
    end)

    describe("concurrency in one worker", function()
        after_each(function()
            key_sandbox.control("DELETE", "/sandbox/faults")
        end)

        it("serves 50 delayed calls at once", function()
            key_sandbox.control("POST", "/sandbox/faults", { fault = "delay", seconds = 1,
                count = 50, path = "/v3/smartguide/guides" })
            local answers, elapsed = run_concurrently(nginx, [[
                local started = ngx.now()
                local ok, err = clients.public_key:guide("LLACONCURRENT"):assign("C1")
                ngx.update_time()
                return { status = err and err.status, took = ngx.now() - started }
            ]], 50)
            for i, answer in ipairs(answers) do
                assert.is_true(answer.ok, "request " .. i .. ": " .. tostring(answer.error))
                -- The sandbox knows no such guide: each call got its 404.
                assert.equals(404, answer.result.status)
                assert.is_true(answer.result.took >= 0.9)
                assert.equals(answers[1].pid, answer.pid)
            end
            print(format("\n50 concurrent calls, each delayed 1 s by the sandbox, took %.2f s",
                elapsed))
            assert.is_true(elapsed < 10, format("took %.2f s", elapsed))
            assert.equals(0, #key_sandbox.control("GET", "/sandbox/faults"))
        end)
    end)

    it("never calls libcurl", function()
        assert.equals(0, nginx.curl_calls())
    end)

    it("leaves no error, alert or emerg line in the error log", function()
        assert.same({}, nginx.bad_log_lines())
    end)
end)

-- {======================================================================
-- Two workers: the certificate store in a shared dict
-- =======================================================================

describe("resty.wechatpay with two workers", function()
    local timer_sandbox, demand_sandbox, key_sandbox, nginx

    setup(function()
        timer_sandbox = helper.start_sandbox({ mode = "certificate" })
        demand_sandbox = helper.start_sandbox({ mode = "certificate" })
        key_sandbox = helper.start_sandbox({ mode = "public_key" })
        nginx = start_nginx({
            workers = 2,
            reuseport = true,
            sandboxes = { timer = timer_sandbox, demand = demand_sandbox, key = key_sandbox },
            clients = {
                timer = { sandbox = "timer", options = { shared_dict = "wechatpay" },
                    timer = 1 },
                demand = { sandbox = "demand", options = { shared_dict = "wechatpay" } },
                -- The same merchant with each worker on its own.
                unshared = { sandbox = "demand" },
                -- A merchant of the public key era configured for certificates.
                no_certificates = { sandbox = "key", options = { shared_dict = "wechatpay",
                    public_key = false, public_key_id = false, apiv3_key = ("k"):rep(32) } },
            },
        })
    end)

    teardown(function()
        if nginx then
            nginx.stop()
        end
        for _, sandbox in ipairs({ timer_sandbox, demand_sandbox, key_sandbox }) do
            sandbox.stop()
        end
        helper.cleanup()
    end)

    -- Runs chunk 20 times at once; returns the answers and how many
    -- workers served them.
    local function run_in_both_workers(chunk)
        local answers = run_concurrently(nginx, chunk, 20)
        local pids, workers = {}, 0
        for i, answer in ipairs(answers) do
            assert.is_true(answer.ok, "request " .. i .. ": " .. tostring(answer.error))
            if not pids[answer.pid] then
                pids[answer.pid] = true
                workers = workers + 1
            end
        end
        return answers, workers
    end

    it("downloads once from the timer for both workers", function()
        local downloads
        for _ = 1, 100 do
            downloads = #requests_to(timer_sandbox, "/v3/certificates")
            if downloads > 0 then
                break
            end
            helper.sleep(0.05)
        end
        -- Both workers' timers have ticked more than once by now.
        helper.sleep(2.5)
        assert.equals(1, #requests_to(timer_sandbox, "/v3/certificates"))

        local answers, workers = run_in_both_workers([[
            local page, err = clients.timer:query_guides({ store_id = 1234 })
            return { ok = page ~= nil, err = err, source = clients.timer:certificates()[1] }
        ]])
        assert.equals(2, workers)
        for _, answer in ipairs(answers) do
            assert.is_nil(answer.result.err)
            assert.equals(timer_sandbox.config.platform_serial, answer.result.source.serial)
        end
        assert.equals(1, #requests_to(timer_sandbox, "/v3/certificates"))
    end)

    it("shares one download that both workers need at once", function()
        demand_sandbox.control("POST", "/sandbox/reset")
        demand_sandbox.control("POST", "/sandbox/faults", { fault = "delay", seconds = 1,
            path = "/v3/certificates" })
        local answers, workers = run_in_both_workers([[
            local page, err = clients.demand:query_guides({ store_id = 1234 })
            return { ok = page ~= nil, err = err }
        ]])
        assert.equals(2, workers)
        for _, answer in ipairs(answers) do
            assert.is_nil(answer.result.err)
            assert.is_true(answer.result.ok)
        end
        assert.equals(1, #requests_to(demand_sandbox, "/v3/certificates"))
    end)

    it("downloads in each worker without a shared dict", function()
        demand_sandbox.control("POST", "/sandbox/reset")
        local _, workers = run_in_both_workers([[
            local page, err = clients.unshared:query_guides({ store_id = 1234 })
            return { ok = page ~= nil, err = err }
        ]])
        assert.equals(2, workers)
        assert.equals(2, #requests_to(demand_sandbox, "/v3/certificates"))
    end)

    it("asks once for a merchant without certificates", function()
        local before = #requests_to(key_sandbox, "/v3/certificates")
        local answers, workers = run_in_both_workers([[
            local guide, err = clients.no_certificates:register_guide(fields("nocert"))
            return { err = err }
        ]])
        assert.equals(2, workers)
        for _, answer in ipairs(answers) do
            assert.equals("config", answer.result.err.kind)
            assert.matches("public_key", answer.result.err.message)
        end
        assert.equals(before + 1, #requests_to(key_sandbox, "/v3/certificates"))
    end)

    it("lifts the shared no-certificates state on refresh", function()
        local before = #requests_to(key_sandbox, "/v3/certificates")
        local result = nginx.run([[
            local changes, err = clients.no_certificates:refresh_certificates()
            return { err = err }
        ]])
        assert.equals("config", result.err.kind)
        assert.equals(before + 1, #requests_to(key_sandbox, "/v3/certificates"))
    end)

    it("never calls libcurl", function()
        assert.equals(0, nginx.curl_calls())
    end)

    it("leaves no error, alert or emerg line in the error log", function()
        assert.same({}, nginx.bad_log_lines())
    end)
end)
