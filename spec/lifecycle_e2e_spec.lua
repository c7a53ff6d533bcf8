-- The certificate lifecycle and callbacks against the sandbox: rotation
-- between calls, a refresh that fails, a flood of unknown serials, the
-- migration window, a merchant without certificates, and callbacks sent
-- over HTTP to a handler that runs client:parse_notification.
local helper = require("helper")
local wechatpay = require("wechatpay")

local HOUR = 3600

-- A clock shared by the clients of a spec and the sandbox: advance()
-- moves them together.
local function shared_clock(sandbox)
    local offset = 0
    return {
        now = function() return os.time() + offset end,
        advance = function(seconds)
            offset = offset + seconds
            sandbox.control("POST", "/sandbox/clock", { skew = offset })
        end,
    }
end

local function timed_client(sandbox, clock, extra)
    local opts = helper.client_options(sandbox, extra)
    opts.clock = clock.now
    return assert(wechatpay.new(opts))
end

local function downloads(sandbox)
    local n = 0
    for _, entry in ipairs(sandbox.control("GET", "/sandbox/requests")) do
        if entry.target == "/v3/certificates" then
            n = n + 1
        end
    end
    return n
end

local function serials(client)
    local list = {}
    for _, entry in ipairs(client:certificates()) do
        if entry.source == "download" then
            list[#list + 1] = entry.serial
        end
    end
    table.sort(list)
    return list
end

local function sorted(list)
    table.sort(list)
    return list
end

describe("certificate rotation against the sandbox", function()
    local sandbox

    before_each(function()
        sandbox = helper.start_sandbox({ mode = "certificate" })
    end)

    after_each(function()
        sandbox.stop()
        helper.cleanup()
    end)

    it("keeps every call working through a rotation", function()
        local clock = shared_clock(sandbox)
        local advance = clock.advance
        local client = timed_client(sandbox, clock)
        local idle = timed_client(sandbox, clock)
        local old = sandbox.config.platform_serial
        local guide = assert(client:register_guide({ store_id = 1234, corpid = "c",
            userid = "rot1", name = "张三", mobile = "13800138000", qr_code = "q",
            avatar = "a" }))
        assert(idle:query_guides({ store_id = 1234 }))
        assert.same({ old }, serials(client))

        -- The platform publishes a new certificate days before using it.
        local new = sandbox.control("POST", "/sandbox/certificates", {
            not_after = os.time() + 6 * 365 * 86400 }).serial
        assert.is_true(guide:assign("R1"))
        advance(12 * HOUR)
        assert.is_true(guide:assign("R2"))
        assert.same(sorted({ old, new }), serials(client))

        -- Fields are now encrypted with the certificate that expires last.
        assert.is_true(guide:update({ name = "李四" }))
        local log = sandbox.control("GET", "/sandbox/requests")
        assert.equals(new, log[#log].headers["wechatpay-serial"])

        -- It signs with the new one, then withdraws the old one.
        sandbox.control("POST", "/sandbox/certificates/sign", { serial = new })
        local before = downloads(sandbox)
        assert.is_true(guide:assign("R3"))
        assert.equals(before, downloads(sandbox))
        sandbox.control("DELETE", "/sandbox/certificates/" .. old)
        assert.is_true(guide:assign("R4"))
        advance(12 * HOUR)
        assert.is_true(guide:assign("R5"))
        assert.same({ new }, serials(client))

        -- A client idle all along learns the new certificate on first use.
        local page, err = idle:query_guides({ store_id = 1234 })
        assert.is_nil(err)
        assert.truthy(page)
    end)

    it("keeps its certificates when a refresh fails", function()
        local clock = shared_clock(sandbox)
        local advance = clock.advance
        local client = timed_client(sandbox, clock)
        assert(client:query_guides({ store_id = 1234 }))
        local held = serials(client)
        -- Three failures: the download and both of its retries.
        sandbox.control("POST", "/sandbox/faults", { fault = "status", status = 500,
            path = "/v3/certificates", count = 3 })
        advance(12 * HOUR)
        local before = downloads(sandbox)
        assert.truthy(client:query_guides({ store_id = 1234 }))
        assert.equals(before + 3, downloads(sandbox))
        assert.same(held, serials(client))
        assert.truthy(client:query_guides({ store_id = 1234 }))
    end)

    it("downloads at most once for a flood of unknown serials", function()
        local clock = shared_clock(sandbox)
        local advance = clock.advance
        local client = timed_client(sandbox, clock)
        assert(client:query_guides({ store_id = 1234 }))
        advance(2 * 60)
        sandbox.control("POST", "/sandbox/faults", { fault = "unknown_serial", count = 15,
            path = "/v3/smartguide/guides" })
        local before = downloads(sandbox)
        for _ = 1, 15 do
            local page, err = client:query_guides({ store_id = 1234 })
            assert.is_nil(page)
            assert.equals("serial", err.reason)
        end
        assert.equals(before + 1, downloads(sandbox))
        assert.truthy(client:query_guides({ store_id = 1234 }))
    end)
end)

describe("a merchant without platform certificates", function()
    local sandbox = helper.use_sandbox({ mode = "public_key" })

    it("gets one config error and no retry loop", function()
        local client = assert(wechatpay.new(helper.client_options(sandbox, {
            public_key_file = false, public_key_id = false, apiv3_key = ("k"):rep(32) })))
        for _ = 1, 3 do
            local guide, err = client:register_guide({ store_id = 1234, corpid = "c",
                userid = "nocert", name = "n", mobile = "1", qr_code = "q", avatar = "a" })
            assert.is_nil(guide)
            assert.equals("config", err.kind)
            assert.matches("public_key_id", err.message)
        end
        assert.equals(1, downloads(sandbox))
        client:close()
    end)
end)

describe("callbacks sent by the sandbox", function()
    local sandbox, handler_pid, dir, url

    local function events()
        local list = {}
        if not helper.exists(dir .. "/events") then
            return list
        end
        for line in io.lines(dir .. "/events") do
            list[#list + 1] = assert(require("wechatpay.core").json_decode(line))
        end
        return list
    end

    setup(function()
        sandbox = helper.start_sandbox({ mode = "both" })
        dir = helper.tmpdir()
        handler_pid = helper.run(string.format("lua5.4 spec/support/notification_handler.lua "
            .. "%s %s > %s 2>&1 & echo $!", sandbox.dir .. "/sandbox.json", dir,
            dir .. "/log")):match("%d+")
        for _ = 1, 100 do
            if helper.exists(dir .. "/port") then
                break
            end
            helper.sleep(0.05)
        end
        url = "http://127.0.0.1:" .. helper.read(dir .. "/port") .. "/notify"
    end)

    teardown(function()
        os.execute("kill " .. handler_pid .. " 2>/dev/null")
        sandbox.stop()
        helper.cleanup()
    end)

    local function notify(fields)
        fields.url = url
        fields.resource = fields.resource or { out_trade_no = "N1", trade_state = "SUCCESS" }
        local before = #events()
        local result = sandbox.control("POST", "/sandbox/notify", fields)
        local list = events()
        assert.equals(before + 1, #list, helper.read(dir .. "/log"))
        return result, list[#list]
    end

    for _, signer in ipairs({ "certificate", "public_key" }) do
        it("accepts a callback signed with the " .. signer, function()
            local result, event = notify({ sign_with = signer })
            assert.equals(204, result.status)
            assert.is_true(event.ok)
            assert.equals("SUCCESS", event.resource.trade_state)
            assert.equals("TRANSACTION.SUCCESS", event.event_type)
        end)
    end

    for _, aad in ipairs({ "transaction", "", "absent", "null" }) do
        it("accepts associated_data " .. aad, function()
            local fields = {}
            if aad == "null" then
                fields.associated_data = require("wechatpay.core").null
            elseif aad ~= "absent" then
                fields.associated_data = aad
            end
            local result, event = notify(fields)
            assert.equals(204, result.status)
            assert.is_true(event.ok)
        end)
    end

    for _, case in ipairs({
        { "signtest", "verify", 401, "probe" },
        { "bad_signature", "verify", 401, "signature" },
        { "stale_timestamp", "verify", 401, "stale" },
        { "missing_header", "verify", 401, "missing" },
        { "wrong_apiv3_key", "decrypt", 500 },
        { "tampered_ciphertext", "decrypt", 500 },
    }) do
        it("answers " .. case[3] .. " for " .. case[1], function()
            local result, event = notify({ fault = case[1] })
            assert.equals(case[3], result.status)
            assert.is_false(event.ok)
            assert.equals(case[2], event.step)
            if case[4] then
                assert.equals(case[4], event.reason)
            end
        end)
    end

    it("refuses an unknown serial after one download", function()
        local result, event = notify({ fault = "unknown_serial" })
        assert.equals(401, result.status)
        assert.equals("serial", event.reason)
    end)
end)
