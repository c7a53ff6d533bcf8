-- End to end: the client against the bundled sandbox, in each
-- verification mode, with the platform's failures injected.
local core = require("wechatpay.core")
local helper = require("helper")
local verification_cases = require("support.verification_cases")
local wechatpay = require("wechatpay")

local function guide_fields(userid, extra)
    local fields = {
        store_id = 1234, corpid = "wwd3ca1b4c1cd9b6a8", userid = userid,
        name = "张三", mobile = "13800138000",
        qr_code = "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=e2e",
        avatar = "https://wx.qlogo.cn/mmopen/e2e/0",
    }
    for k, v in pairs(extra or {}) do
        fields[k] = v
    end
    return fields
end

-- The stored guide with this guide_id, plaintext name and mobile included.
local function stored_guide(sandbox, guide_id)
    for _, guide in ipairs(sandbox.control("GET", "/sandbox/guides")) do
        if guide.guide_id == guide_id then
            return guide
        end
    end
    return nil
end

local requests_to = helper.requests_to
local last_request = helper.last_request

for _, mode in ipairs({ "certificate", "public_key", "both" }) do
    describe("staff calls in " .. mode .. " mode", function()
        local sandbox, client

        setup(function()
            sandbox = helper.start_sandbox({ mode = mode })
            client = assert(wechatpay.new(helper.client_options(sandbox)))
        end)

        teardown(function()
            client:close()
            sandbox.stop()
            helper.cleanup()
        end)

        -- The serial that encrypts fields and that requests announce.
        local function expected_serial()
            if mode == "certificate" then
                return sandbox.config.platform_serial
            end
            return sandbox.config.public_key_id
        end

        it("registers a guide with a Chinese name", function()
            local guide, err = client:register_guide(guide_fields("reg1", { name = "张三丰" }))
            assert.is_nil(err)
            assert.matches("^LLA", guide.guide_id)
            local stored = stored_guide(sandbox, guide.guide_id)
            assert.equals("张三丰", stored.name)
            assert.equals("13800138000", stored.mobile)
            assert.equals(1234, stored.store_id)
            local req = last_request(sandbox)
            assert.equals(expected_serial(), req.headers["wechatpay-serial"])
            assert.equals(200, req.status)
        end)

        it("queries a guide by userid and decrypts it", function()
            local guide = assert(client:register_guide(guide_fields("query1", {
                name = "李四", mobile = "13900000001" })))
            local page, err = client:query_guides({ store_id = 1234, userid = "query1" })
            assert.is_nil(err)
            assert.equals(1, page.total_count)
            assert.equals(guide.guide_id, page.data[1].guide_id)
            assert.equals("李四", page.data[1].name)
            assert.equals("13900000001", page.data[1].mobile)
            assert.equals("query1", page.data[1].userid)
        end)

        it("queries by mobile with the ciphertext percent-encoded", function()
            local guide = assert(client:register_guide(guide_fields("query2", {
                mobile = "13900000002" })))
            local page, err = client:query_guides({ store_id = 1234, mobile = "13900000002" })
            assert.is_nil(err)
            assert.equals(guide.guide_id, page.data[1].guide_id)
            local req = last_request(sandbox)
            local encoded = req.target:match("mobile=([^&]+)")
            assert.truthy(encoded)
            assert.not_matches("[+/=]", encoded)
            assert.equals(expected_serial(), req.headers["wechatpay-serial"])
        end)

        it("assigns a guide to an order", function()
            local guide = assert(client:register_guide(guide_fields("assign1")))
            local ok, err = guide:assign("E2E-ORDER_1|*")
            assert.is_nil(err)
            assert.is_true(ok)
            local found = false
            for _, a in ipairs(sandbox.control("GET", "/sandbox/assignments")) do
                if a.guide_id == guide.guide_id and a.out_trade_no == "E2E-ORDER_1|*" then
                    found = true
                end
            end
            assert.is_true(found)
        end)

        it("assigns through client:guide(id)", function()
            local registered = assert(client:register_guide(guide_fields("assign2")))
            local guide = assert(client:guide(registered.guide_id))
            assert.is_true(guide:assign("E2E2"))
        end)

        it("updates name and mobile", function()
            local guide = assert(client:register_guide(guide_fields("update1")))
            local ok, err = guide:update({ name = "王五", mobile = "13700000003",
                avatar = "https://wx.qlogo.cn/mmopen/e2e/1" })
            assert.is_nil(err)
            assert.is_true(ok)
            local stored = stored_guide(sandbox, guide.guide_id)
            assert.equals("王五", stored.name)
            assert.equals("13700000003", stored.mobile)
            assert.equals("https://wx.qlogo.cn/mmopen/e2e/1", stored.avatar)
            local page = assert(client:query_guides({ store_id = 1234, userid = "update1" }))
            assert.equals("王五", page.data[1].name)
        end)

        it("walks every guide of a store with each_guide", function()
            sandbox.control("POST", "/sandbox/stores", { store_id = 5678 })
            local registered = {}
            for i = 1, 23 do
                local guide = assert(client:register_guide(guide_fields("walk" .. i,
                    { store_id = 5678, name = "员工" .. i })))
                registered[guide.guide_id] = "员工" .. i
            end
            local seen = 0
            for guide, err in client:each_guide({ store_id = 5678 }) do
                assert.is_nil(err)
                assert.equals(registered[guide.guide_id], guide.name)
                seen = seen + 1
            end
            assert.equals(23, seen)
        end)

        it("calls any path with request", function()
            local res, err = client:request("GET", "/v3/smartguide/guides", {
                query = { store_id = 1234, limit = 1 },
            })
            assert.is_nil(err)
            assert.equals(200, res.status)
            assert.equals(1, res.data.limit)
            assert.truthy(res.request_id)
        end)

        it("returns the platform's error for an unknown store", function()
            local guide, err = client:register_guide(guide_fields("nostore", { store_id = 999 }))
            assert.is_nil(guide)
            assert.equals("api", err.kind)
            assert.equals(400, err.status)
            assert.equals("PARAM_ERROR", err.code)
            assert.matches("门店id不存在", err.message)
            assert.truthy(err.request_id)
        end)

        it("returns 404 for assigning an unknown guide", function()
            local ok, err = client:guide("LLANOSUCHGUIDE"):assign("X1")
            assert.is_nil(ok)
            assert.equals("api", err.kind)
            assert.equals(404, err.status)
        end)

        it("downloads certificates only in certificate mode", function()
            local downloads = #requests_to(sandbox, "/v3/certificates")
            if mode == "public_key" then
                assert.equals(0, downloads)
            elseif mode == "certificate" then
                assert.equals(1, downloads)
                local listed = client:certificates()
                assert.equals(sandbox.config.platform_serial, listed[1].serial)
                assert.equals("download", listed[1].source)
            end
        end)
    end)
end

describe("verification failures against the sandbox", function()
    local sandbox, client

    setup(function()
        sandbox = helper.start_sandbox({ mode = "certificate" })
        client = assert(wechatpay.new(helper.client_options(sandbox)))
        -- The first call downloads the certificates.
        assert(client:request("GET", "/v3/smartguide/guides", { query = { store_id = 1234 } }))
    end)

    teardown(function()
        client:close()
        sandbox.stop()
        helper.cleanup()
    end)

    after_each(function()
        sandbox.control("DELETE", "/sandbox/faults")
        sandbox.control("POST", "/sandbox/clock", { skew = 0 })
    end)

    -- Arms fault, queries once (expected to fail) and once more
    -- (expected to work).  Returns the first error and the number of
    -- certificate downloads that both queries caused.
    local function query_with_fault(fault)
        local before = #requests_to(sandbox, "/v3/certificates")
        sandbox.control("POST", "/sandbox/faults", fault)
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.truthy(client:query_guides({ store_id = 1234 }))
        return err, #requests_to(sandbox, "/v3/certificates") - before
    end

    for _, case in ipairs(verification_cases) do
        it(case.name, function()
            case.check(query_with_fault(case.fault))
        end)
    end

    it("is refused by the platform when the clock is off", function()
        sandbox.control("POST", "/sandbox/clock", { skew = 400 })
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.equals("api", err.kind)
        assert.equals(401, err.status)
        assert.equals("SIGN_ERROR", err.code)
    end)
end)

describe("network failures against the sandbox", function()
    local sandbox = helper.use_sandbox({ mode = "public_key" })

    after_each(function()
        sandbox.control("DELETE", "/sandbox/faults")
    end)

    -- Without retries, so that each failure shows as it is.
    local function new_client(extra)
        local opts = helper.client_options(sandbox, extra)
        opts.retries = 0
        return assert(wechatpay.new(opts))
    end

    it("times out when no answer comes", function()
        local client = new_client({ timeout = 1 })
        sandbox.control("POST", "/sandbox/faults", { fault = "hang",
            path = "/v3/smartguide/guides" })
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.equals("network", err.kind)
        assert.equals("timeout", err.reason)
        client:close()
    end)

    it("reports a truncated body", function()
        local client = new_client()
        sandbox.control("POST", "/sandbox/faults", { fault = "truncate",
            path = "/v3/smartguide/guides" })
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.equals("network", err.kind)
        assert.equals("truncated", err.reason)
        assert.truthy(client:query_guides({ store_id = 1234 }))
        client:close()
    end)

    it("refuses a body over max_response_size", function()
        local client = new_client({ max_response_size = 4096 })
        sandbox.control("POST", "/sandbox/faults", { fault = "oversize", bytes = 8192,
            path = "/v3/smartguide/guides" })
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.equals("too_large", err.reason)
        assert.matches("4096", err.message)
        client:close()
    end)

    it("reports a connection closed without an answer", function()
        local client = new_client()
        sandbox.control("POST", "/sandbox/faults", { fault = "reset", count = 2,
            path = "/v3/smartguide/guides" })
        local guide, err = client:register_guide(guide_fields("reset1"))
        assert.is_nil(guide)
        assert.equals("network", err.kind)
        assert.equals("reset", err.reason)
        client:close()
    end)

    it("never sends a registration twice on its own", function()
        local client = new_client()
        assert(client:query_guides({ store_id = 1234 }))    -- leaves a connection open
        sandbox.control("POST", "/sandbox/faults", { fault = "reset", count = 1,
            method = "POST", path = "/v3/smartguide/guides" })
        local before = #requests_to(sandbox, "/v3/smartguide/guides")
        local guide = client:register_guide(guide_fields("once1"))
        assert.is_nil(guide)
        assert.equals(before + 1, #requests_to(sandbox, "/v3/smartguide/guides"))
        client:close()
    end)

    it("reports a refused connection as not sent", function()
        local client = new_client({ base_url = "http://127.0.0.1:1" })
        local res, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(res)
        assert.equals("network", err.kind)
        assert.equals("connect", err.reason)
        assert.is_false(err.sent)
        client:close()
    end)
end)

describe("one deadline for a whole call", function()
    local sandbox = helper.use_sandbox({ mode = "certificate" })

    it("covers the certificate download and the request together", function()
        -- Each part alone fits the 1.5 s deadline; both together do not.
        sandbox.control("POST", "/sandbox/faults", { fault = "delay", seconds = 0.9,
            path = "/v3/certificates" })
        sandbox.control("POST", "/sandbox/faults", { fault = "delay", seconds = 0.9,
            path = "/v3/smartguide/guides" })
        local client = assert(wechatpay.new(helper.client_options(sandbox, { deadline = 1.5 })))
        local page, err = client:query_guides({ store_id = 1234, mobile = "13800138000" })
        assert.is_nil(page)
        assert.equals("network", err.kind)
        assert.equals("timeout", err.reason)
        assert.truthy(client:query_guides({ store_id = 1234 }))
        client:close()
    end)
end)

describe("the process around the client", function()
    local sandbox = helper.use_sandbox({ mode = "public_key" })

    -- Counts the TCP sockets a child process inherits: its open sockets
    -- whose inode is in the kernel's TCP tables.
    local function inherited_tcp_sockets()
        local out = helper.run("ls -l /proc/self/fd 2>/dev/null; echo ==; "
            .. "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null")
        local fds, tables = out:match("^(.-)==(.*)$")
        local tcp = {}
        for line in tables:gmatch("[^\n]+") do
            -- The tenth field is the inode.
            local fields = {}
            for field in line:gmatch("%S+") do
                fields[#fields + 1] = field
            end
            local inode = fields[1] ~= "sl" and fields[10] or nil
            if inode then
                tcp[inode] = true
            end
        end
        local n = 0
        for inode in fds:gmatch("socket:%[(%d+)%]") do
            if tcp[inode] then
                n = n + 1
            end
        end
        return n
    end

    it("keeps its connection out of child processes", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox)))
        assert.truthy(client:query_guides({ store_id = 1234 }))
        assert.equals(0, inherited_tcp_sockets())
        client:close()
    end)

    it("ignores proxy variables in the environment", function()
        local dir = helper.tmpdir()
        local script = helper.write(dir .. "/call.lua", string.format([[
            local wechatpay = require("wechatpay")
            local core = require("wechatpay.core")
            local f = assert(io.open(%q))
            local c = core.json_decode(f:read("a"))
            local client = assert(wechatpay.new({ mchid = c.mchid, serial_no = c.serial_no,
                private_key_file = c.private_key_file, public_key_file = c.public_key_file,
                public_key_id = c.public_key_id, base_url = c.base_url }))
            local page, err = client:query_guides({ store_id = 1234 })
            io.write(page and "ok" or tostring(err))
        ]], sandbox.dir .. "/sandbox.json"))
        local out = helper.run("http_proxy=http://127.0.0.1:1 HTTP_PROXY=http://127.0.0.1:1 "
            .. "https_proxy=http://127.0.0.1:1 ALL_PROXY=http://127.0.0.1:1 "
            .. "LUA_PATH='lua/?.lua;;' LUA_CPATH='build/?.so;;' lua5.4 " .. script .. " 2>&1")
        assert.equals("ok", out)
    end)

    it("uses the proxy option when given", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            proxy = "http://127.0.0.1:1" })))
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(page)
        assert.equals("network", err.kind)
        assert.equals("connect", err.reason)
        client:close()
    end)

end)

describe("configuration mismatches against the sandbox", function()
    local sandbox = helper.use_sandbox({ mode = "public_key" })

    it("tells a public-key merchant to configure the public key", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            public_key_file = false, public_key_id = false,
            apiv3_key = ("k"):rep(32),
        })))
        local guide, err = client:register_guide(guide_fields("cfg1"))
        assert.is_nil(guide)
        assert.equals("config", err.kind)
        assert.matches("public_key", err.message)
        assert.equals(404, err.status)
        client:close()
    end)

    it("gets SIGN_ERROR for a wrong merchant serial", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            serial_no = "0123456789ABCDEF" })))
        local ok, err = client:guide("LLA1"):assign("X1")
        assert.is_nil(ok)
        assert.equals(401, err.status)
        assert.equals("SIGN_ERROR", err.code)
        client:close()
    end)

    it("gets SIGN_ERROR for a key that does not match the serial", function()
        local dir = helper.tmpdir()
        local other = helper.write(dir .. "/other_test_key.pem", core.generate_test_key(2048))
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            private_key_file = other })))
        local ok, err = client:guide("LLA1"):assign("X1")
        assert.is_nil(ok)
        assert.equals("SIGN_ERROR", err.code)
        client:close()
    end)
end)

describe("certificate mode with a wrong APIv3 key", function()
    local sandbox = helper.use_sandbox({ mode = "certificate" })

    it("fails with a decrypt error naming the APIv3 key", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            apiv3_key = ("x"):rep(32) })))
        local guide, err = client:register_guide(guide_fields("key1"))
        assert.is_nil(guide)
        assert.equals("decrypt", err.kind)
        assert.matches("APIv3 key", err.message)
        client:close()
    end)
end)

describe("TLS against the sandbox", function()
    local sandbox = helper.use_sandbox({ mode = "public_key", tls = true })

    it("works with the sandbox's CA", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox)))
        assert.matches("^https://", sandbox.base_url)
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(err)
        assert.truthy(page)
        client:close()
    end)

    it("refuses the server without that CA", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, { ca_file = false })))
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(page)
        assert.equals("network", err.kind)
        assert.equals("tls", err.reason)
        client:close()
    end)
end)
