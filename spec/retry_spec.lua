-- Retries against the sandbox: which failures are retried, re-signing,
-- Retry-After, the backup host, the deadline, and the log hook.
local helper = require("helper")
local wechatpay = require("wechatpay")

local function guide_fields(userid)
    return {
        store_id = 1234, corpid = "wwd3ca1b4c1cd9b6a8", userid = userid,
        name = "张三", mobile = "13800138000",
        qr_code = "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=r",
        avatar = "https://wx.qlogo.cn/mmopen/r/0",
    }
end

describe("retries", function()
    local sandbox = helper.use_sandbox({ mode = "public_key" })

    before_each(function()
        sandbox.control("POST", "/sandbox/reset")
    end)

    -- A client that waits little between attempts and records its log.
    local function new_client(extra)
        local lines = {}
        local opts = helper.client_options(sandbox, {
            retry_delay = 0.01, retry_max_delay = 0.05,
            log = function(level, message)
                lines[#lines + 1] = level .. " " .. message
            end,
        })
        for k, v in pairs(extra or {}) do
            opts[k] = v
        end
        return assert(wechatpay.new(opts)), lines
    end

    local function fault(spec)
        sandbox.control("POST", "/sandbox/faults", spec)
    end

    local function logged(prefix)
        local found = {}
        for _, entry in ipairs(sandbox.control("GET", "/sandbox/requests")) do
            if entry.target:sub(1, #prefix) == prefix then
                found[#found + 1] = entry
            end
        end
        return found
    end

    it("retries a query after 503", function()
        local client, lines = new_client()
        fault({ fault = "status", status = 503, path = "/v3/smartguide/guides" })
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(err)
        assert.truthy(page)
        assert.equals(2, #logged("/v3/smartguide/guides"))
        assert.equals(1, #lines)
        assert.matches("^warn GET /v3/smartguide/guides%?store_id=1234 failed %(503%)", lines[1])
        client:close()
    end)

    it("signs every attempt anew", function()
        local client = new_client()
        fault({ fault = "truncate", path = "/v3/smartguide/guides" })
        assert.truthy(client:query_guides({ store_id = 1234 }))
        local attempts = logged("/v3/smartguide/guides")
        assert.equals(2, #attempts)
        assert.not_equals(attempts[1].authorization.nonce_str,
            attempts[2].authorization.nonce_str)
        client:close()
    end)

    it("honours Retry-After on 429", function()
        local client = new_client({ retries = 0 })
        fault({ fault = "status", status = 429, retry_after = 1,
            path = "/v3/smartguide/guides" })
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(page)
        assert.equals(429, err.status)
        assert.equals(1, err.retry_after)
        client:close()

        client = new_client()
        fault({ fault = "status", status = 429, retry_after = 1,
            path = "/v3/smartguide/guides" })
        assert.truthy(client:query_guides({ store_id = 1234 }))
        client:close()
    end)

    it("gives up after the configured attempts", function()
        local client = new_client({ retries = 3 })
        fault({ fault = "status", status = 500, count = 10, path = "/v3/smartguide/guides" })
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(page)
        assert.equals(500, err.status)
        assert.equals(4, err.attempts)
        assert.equals(4, #logged("/v3/smartguide/guides"))
        client:close()
    end)

    it("retries an assign that timed out", function()
        local client = new_client({ timeout = 0.5 })
        local guide = assert(client:register_guide(guide_fields("retry1")))
        fault({ fault = "hang", method = "POST", path = "/v3/smartguide/guides/[^/]+/assign" })
        local ok, err = guide:assign("R1")
        assert.is_nil(err)
        assert.is_true(ok)
        client:close()
    end)

    it("retries a query whose connection closed unread", function()
        local client = new_client()
        -- A new connection: the next one the client opens is closed unread.
        sandbox.control("POST", "/sandbox/faults", { fault = "reset_before_request" })
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(err)
        assert.truthy(page)
        client:close()
    end)

    it("does not retry a registration whose connection closed unread", function()
        local client = new_client()
        sandbox.control("POST", "/sandbox/faults", { fault = "reset_before_request" })
        local guide, err = client:register_guide(guide_fields("retry6"))
        assert.is_nil(guide)
        assert.equals("network", err.kind)
        assert.equals(1, err.attempts)
        assert.equals(0, #logged("/v3/smartguide/guides"))
        client:close()
    end)

    it("retries a registration after 429, which was not processed", function()
        local client = new_client()
        fault({ fault = "status", status = 429, method = "POST",
            path = "/v3/smartguide/guides" })
        local guide, err = client:register_guide(guide_fields("retry429"))
        assert.is_nil(err)
        assert.truthy(guide)
        local count = 0
        for _, stored in ipairs(sandbox.control("GET", "/sandbox/guides")) do
            if stored.userid == "retry429" then
                count = count + 1
            end
        end
        assert.equals(1, count)
        client:close()
    end)

    it("does not retry a registration after 500", function()
        local client = new_client()
        fault({ fault = "status", status = 500, method = "POST",
            path = "/v3/smartguide/guides" })
        local guide, err = client:register_guide(guide_fields("retry2"))
        assert.is_nil(guide)
        assert.equals(500, err.status)
        assert.equals(1, err.attempts)
        client:close()
    end)

    it("does not retry a registration whose connection was reset", function()
        local client = new_client()
        fault({ fault = "reset", method = "POST", path = "/v3/smartguide/guides" })
        local guide, err = client:register_guide(guide_fields("retry3"))
        assert.is_nil(guide)
        assert.equals("network", err.kind)
        assert.equals(1, err.attempts)
        assert.equals(1, #logged("/v3/smartguide/guides"))
        client:close()
    end)

    it("registers through the backup host after a refused connection", function()
        local client, lines = new_client({ base_url = "http://127.0.0.1:1",
            backup_base_url = sandbox.base_url })
        local guide, err = client:register_guide(guide_fields("retry4"))
        assert.is_nil(err)
        assert.truthy(guide)
        local count = 0
        for _, stored in ipairs(sandbox.control("GET", "/sandbox/guides")) do
            if stored.userid == "retry4" then
                count = count + 1
            end
        end
        assert.equals(1, count)
        assert.matches("connect", lines[1])
        assert.matches(sandbox.base_url, lines[1], 1, true)
        client:close()
    end)

    it("stops when the deadline leaves no time", function()
        local client = new_client({ retries = 10, retry_delay = 0.3, retry_max_delay = 0.3,
            deadline = 1 })
        fault({ fault = "status", status = 503, count = 20, path = "/v3/smartguide/guides" })
        local page, err = client:query_guides({ store_id = 1234 })
        assert.is_nil(page)
        assert.equals(503, err.status)
        assert.is_true(err.attempts < 11, tostring(err.attempts))
        client:close()
    end)

    it("retries a certificate download", function()
        local certificate_sandbox = helper.start_sandbox({ mode = "certificate" })
        local opts = helper.client_options(certificate_sandbox, { retry_delay = 0.01 })
        local client = assert(wechatpay.new(opts))
        certificate_sandbox.control("POST", "/sandbox/faults", { fault = "status",
            status = 503, path = "/v3/certificates" })
        local page, err = client:query_guides({ store_id = 1234, mobile = "13800138000" })
        assert.is_nil(err)
        assert.truthy(page)
        client:close()
        certificate_sandbox.stop()
    end)

    it("keeps secrets out of the log", function()
        local client, lines = new_client()
        fault({ fault = "status", status = 503, count = 2 })
        assert(client:register_guide(guide_fields("retry5")) == nil or true)
        assert(client:query_guides({ store_id = 1234, mobile = "13800138000" }))
        local text = table.concat(lines, "\n")
        assert.is_true(#lines > 0)
        for _, secret in ipairs({ "13800138000", "张三", "WECHATPAY2-SHA256-RSA2048",
            "signature=", sandbox.config.apiv3_key, "PRIVATE KEY" }) do
            assert.is_nil(text:find(secret, 1, true), secret)
        end
        client:close()
    end)
end)
