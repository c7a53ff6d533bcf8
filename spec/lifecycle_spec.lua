-- Platform certificates over a client's life: first download, the
-- refresh schedule, unknown serials, expiry, the trust rules for a new
-- list, migration to the public key, and callbacks.  A fake platform in
-- this file signs its own answers, and the clock is a variable.
local core = require("wechatpay.core")
local helper = require("helper")
local wechatpay = require("wechatpay")

local APIV3_KEY = "Lcpy6nAcDj8V7wlTXYqUdMJqRm0pXx3E"
local PUBLIC_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"
local START = 1800000000
local DAY = 86400

local merchant = {}

-- A platform certificate: key, PEM, serial and validity.
local function new_certificate(serial, not_before, not_after)
    local key_pem = core.generate_test_key(2048)
    local pem = core.issue_test_certificate({
        key = key_pem, serial = serial, common_name = "platform " .. serial,
        not_before = not_before, not_after = not_after,
    })
    return {
        serial = serial, pem = pem, key = assert(core.load_private_key(key_pem)),
        not_before = not_before, not_after = not_after,
    }
end

-- The fake platform: certificates it lists, the one it signs with, a
-- clock, and counters.
local function new_platform()
    local platform = {
        now = START,
        listed = {},
        signer = nil,
        downloads = 0,
        sent = {},
        certificate_status = 200,
        aead = assert(core.new_aead_key(APIV3_KEY)),
    }

    function platform.sign(status, body, signer, overrides)
        signer = signer or platform.signer
        local headers = {
            ["wechatpay-timestamp"] = tostring(platform.now),
            ["wechatpay-nonce"] = core.nonce(),
            ["wechatpay-serial"] = signer.serial,
            ["request-id"] = "R" .. #platform.sent,
        }
        headers["wechatpay-signature"] = signer.key:sign(core.response_message(
            headers["wechatpay-timestamp"], headers["wechatpay-nonce"], body))
        for k, v in pairs(overrides or {}) do
            headers[k] = v
        end
        return { status = status, headers = headers, body = body }
    end

    function platform.certificate_list(certs)
        local data = {}
        for i, cert in ipairs(certs or platform.listed) do
            local nonce = core.nonce():sub(1, 12)
            data[i] = {
                serial_no = cert.serial,
                effective_time = "2027-01-01T00:00:00+08:00",
                expire_time = "2032-01-01T00:00:00+08:00",
                encrypt_certificate = {
                    algorithm = "AEAD_AES_256_GCM", nonce = nonce,
                    associated_data = "certificate",
                    ciphertext = platform.aead:encrypt(nonce, "certificate", cert.pem),
                },
            }
        end
        return core.json_encode({ data = data })
    end

    -- The transport function given to the client.
    function platform.transport(req)
        platform.sent[#platform.sent + 1] = req
        if req.url:find("/v3/certificates", 1, true) then
            platform.downloads = platform.downloads + 1
            if platform.on_download then
                return platform.on_download(req)
            end
            if platform.certificate_status ~= 200 then
                return { status = platform.certificate_status, headers = {},
                    body = '{"code":"RESOURCE_NOT_EXISTS","message":"无可用的平台证书"}' }
            end
            return platform.sign(200, platform.certificate_list())
        end
        if platform.on_call then
            return platform.on_call(req)
        end
        return platform.sign(204, "")
    end

    return platform
end

local function new_client(platform, extra)
    local opts = {
        mchid = "1900000109",
        serial_no = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
        private_key = merchant.pem,
        apiv3_key = APIV3_KEY,
        base_url = "https://api.mch.weixin.qq.com",
        clock = function() return platform.now end,
        transport = platform.transport,
        -- One request per download, so that the counts below are exact.
        retries = 0,
    }
    for k, v in pairs(extra or {}) do
        opts[k] = v ~= false and v or nil
    end
    return assert(wechatpay.new(opts))
end

local function request_header(req, name)
    for _, line in ipairs(req.headers) do
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k:lower() == name:lower() then
            return v
        end
    end
end

local function serials(client)
    local list = {}
    for _, entry in ipairs(client:certificates()) do
        list[#list + 1] = entry.serial
    end
    table.sort(list)
    return list
end

describe("certificate lifecycle", function()
    local a, b

    setup(function()
        merchant.pem = core.generate_test_key(2048)
        a = new_certificate("0AAA", START - DAY, START + 30 * DAY)
        b = new_certificate("0BBB", START - DAY, START + 60 * DAY)
    end)

    teardown(helper.cleanup)

    local platform

    before_each(function()
        platform = new_platform()
        platform.listed = { a }
        platform.signer = a
    end)

    it("downloads on first need, once", function()
        local client = new_client(platform)
        assert.equals(0, platform.downloads)
        assert.is_true(client:guide("LLA1"):assign("O1"))
        assert.is_true(client:guide("LLA1"):assign("O2"))
        assert.equals(1, platform.downloads)
        assert.same({ "0AAA" }, serials(client))
        assert.equals("download", client:certificates()[1].source)
        assert.equals(a.not_after, client:certificates()[1].not_after)
    end)

    it("refreshes when the interval has passed", function()
        local client = new_client(platform, { refresh_interval = 3600 })
        assert(client:guide("LLA1"):assign("O1"))
        platform.now = platform.now + 3599
        assert(client:guide("LLA1"):assign("O2"))
        assert.equals(1, platform.downloads)
        platform.now = platform.now + 1
        platform.listed = { a, b }
        assert(client:guide("LLA1"):assign("O3"))
        assert.equals(2, platform.downloads)
        assert.same({ "0AAA", "0BBB" }, serials(client))
    end)

    it("refreshes every 12 hours by default", function()
        local client = new_client(platform)
        assert(client:guide("LLA1"):assign("O1"))
        platform.now = platform.now + 12 * 3600 - 1
        assert(client:guide("LLA1"):assign("O2"))
        assert.equals(1, platform.downloads)
        platform.now = platform.now + 1
        assert(client:guide("LLA1"):assign("O3"))
        assert.equals(2, platform.downloads)
    end)

    it("keeps its certificates when a refresh fails", function()
        local client = new_client(platform, { refresh_interval = 3600 })
        assert(client:guide("LLA1"):assign("O1"))
        platform.now = platform.now + 3600
        platform.on_download = function()
            return { status = 500, headers = {}, body = '{"code":"SYSTEM_ERROR","message":"x"}' }
        end
        assert.is_true(client:guide("LLA1"):assign("O2"))
        assert.equals(2, platform.downloads)
        assert.same({ "0AAA" }, serials(client))
        -- The next attempt waits a minute, then succeeds.
        assert(client:guide("LLA1"):assign("O3"))
        assert.equals(2, platform.downloads)
        platform.on_download = nil
        platform.listed = { a, b }
        platform.now = platform.now + 60
        assert(client:guide("LLA1"):assign("O4"))
        assert.equals(3, platform.downloads)
        assert.same({ "0AAA", "0BBB" }, serials(client))
    end)

    it("downloads at most once a minute for unknown serials", function()
        local client = new_client(platform)
        assert(client:guide("LLA1"):assign("O0"))
        local forged = new_certificate("0FFF", START - DAY, START + DAY)
        platform.on_call = function()
            return platform.sign(204, "", forged)
        end
        -- The first download was under a minute ago: the flood waits.
        for i = 1, 20 do
            local ok, err = client:guide("LLA1"):assign("F" .. i)
            assert.is_nil(ok)
            assert.equals("serial", err.reason)
        end
        assert.equals(1, platform.downloads)
        platform.now = platform.now + 60
        for i = 21, 40 do
            assert.is_nil(client:guide("LLA1"):assign("F" .. i))
        end
        assert.equals(2, platform.downloads)
    end)

    it("learns a new certificate from an unknown serial", function()
        local client = new_client(platform)
        assert(client:guide("LLA1"):assign("O0"))
        platform.now = platform.now + 120
        platform.listed = { a, b }
        platform.on_call = function()
            return platform.sign(204, "", b)
        end
        assert.is_true(client:guide("LLA1"):assign("O1"))
        assert.equals(2, platform.downloads)
    end)

    it("encrypts with the valid certificate that expires last", function()
        platform.listed = { b, a }
        local client = new_client(platform)
        assert(client:guide("LLA1"):update({ name = "张三" }))
        local req = platform.sent[#platform.sent]
        assert.equals("0BBB", request_header(req, "Wechatpay-Serial"))
        local body = core.json_decode(req.body)
        assert.equals("张三", b.key:decrypt(body.name))
    end)

    it("drops certificates that expire", function()
        platform.listed = { a, b }
        local client = new_client(platform, { refresh_interval = 29 * DAY })
        assert(client:guide("LLA1"):assign("O1"))
        assert.same({ "0AAA", "0BBB" }, serials(client))
        platform.now = a.not_after
        platform.signer = b
        assert(client:guide("LLA1"):assign("O2"))
        assert.same({ "0BBB" }, serials(client))
        -- A response still signed by the expired one fails.
        platform.on_call = function()
            return platform.sign(204, "", a)
        end
        local ok, err = client:guide("LLA1"):assign("O3")
        assert.is_nil(ok)
        assert.equals("verify", err.kind)
    end)

    it("names a failed download as the cause", function()
        platform.aead = assert(core.new_aead_key(("z"):rep(32)))
        local client = new_client(platform)
        local ok, err = client:guide("LLA1"):assign("O1")
        assert.is_nil(ok)
        assert.equals("verify", err.kind)
        assert.equals("decrypt", err.cause.kind)
        assert.matches("APIv3 key", err.message)
    end)

    it("starts one download for forged serials before any success", function()
        platform.certificate_status = 500
        local client = new_client(platform)
        local forged = new_certificate("0FFE", START - DAY, START + DAY)
        platform.on_call = function()
            return platform.sign(204, "", forged)
        end
        for i = 1, 10 do
            assert.is_nil(client:guide("LLA1"):assign("F" .. i))
        end
        assert.equals(1, platform.downloads)
    end)

    it("compares serials exactly", function()
        local client = new_client(platform)
        assert(client:guide("LLA1"):assign("O1"))
        platform.on_call = function()
            return platform.sign(204, "", a, { ["wechatpay-serial"] = "0aaa" })
        end
        local ok, err = client:guide("LLA1"):assign("O2")
        assert.is_nil(ok)
        assert.equals("serial", err.reason)
    end)

    describe("trust", function()
        it("refuses a first list signed by a key outside it", function()
            local outsider = new_certificate("0EEE", START - DAY, START + DAY)
            platform.on_download = function()
                return platform.sign(200, platform.certificate_list(), outsider)
            end
            local client = new_client(platform)
            local ok, err = client:guide("LLA1"):update({ name = "x" })
            assert.is_nil(ok)
            assert.equals("verify", err.kind)
            assert.matches("certificate list", err.message)
            assert.same({}, serials(client))
        end)

        it("refuses a first list that fails its AES-GCM tag", function()
            platform.aead = assert(core.new_aead_key(("z"):rep(32)))
            local client = new_client(platform)
            local ok, err = client:guide("LLA1"):update({ name = "x" })
            assert.is_nil(ok)
            assert.equals("decrypt", err.kind)
            assert.matches("APIv3 key", err.message)
        end)

        it("refuses a later list signed only by its new certificate", function()
            local client = new_client(platform)
            assert(client:guide("LLA1"):assign("O1"))
            local mallory = new_certificate("0DDD", START - DAY, START + 90 * DAY)
            platform.now = platform.now + 12 * 3600
            platform.on_download = function()
                return platform.sign(200, platform.certificate_list({ a, mallory }), mallory)
            end
            assert.is_true(client:guide("LLA1"):assign("O2"))
            assert.same({ "0AAA" }, serials(client))
            local changes, err = client:refresh_certificates()
            assert.is_nil(changes)
            assert.equals("verify", err.kind)
            assert.matches("a key already trusted", err.message)
            assert.same({ "0AAA" }, serials(client))
        end)

        it("accepts a new certificate signed for by a trusted one", function()
            local client = new_client(platform)
            assert(client:guide("LLA1"):assign("O1"))
            platform.listed = { a, b }
            local changes, err = client:refresh_certificates()
            assert.is_nil(err)
            assert.same({ "0BBB" }, changes.added)
            assert.same({ "0AAA" }, changes.kept)
            assert.same({}, changes.removed)
        end)

        it("reports withdrawn certificates as removed", function()
            platform.listed = { a, b }
            local client = new_client(platform)
            assert(client:guide("LLA1"):assign("O1"))
            platform.listed = { b }
            local changes = assert(client:refresh_certificates())
            assert.same({ "0AAA" }, changes.removed)
            assert.same({ "0BBB" }, serials(client))
        end)

        it("accepts a list signed by its new certificate after a long idle", function()
            local client = new_client(platform)
            assert(client:guide("LLA1"):assign("O1"))
            platform.now = platform.now + 3 * DAY
            platform.listed = { a, b }
            platform.signer = b
            assert.is_true(client:guide("LLA1"):assign("O2"))
            assert.same({ "0AAA", "0BBB" }, serials(client))
        end)

        it("recovers from a missed rotation on request", function()
            local client = new_client(platform)
            assert(client:guide("LLA1"):assign("O1"))
            -- The platform switches to b before this client ever saw it.
            platform.now = platform.now + 120
            platform.listed = { a, b }
            platform.signer = b
            local ok, err = client:guide("LLA1"):assign("O2")
            assert.is_nil(ok)
            assert.equals("verify", err.kind)
            assert.equals("verify", err.cause.kind)
            assert.matches("accept_new_signer", err.message)
            local changes, rerr = client:refresh_certificates()
            assert.is_nil(changes)
            assert.matches("accept_new_signer", rerr.message)
            changes = assert(client:refresh_certificates({ accept_new_signer = true }))
            assert.same({ "0BBB" }, changes.added)
            assert.is_true(client:guide("LLA1"):assign("O3"))
        end)

        it("bootstraps again once every certificate has expired", function()
            local client = new_client(platform, { refresh_interval = 29 * DAY })
            assert(client:guide("LLA1"):assign("O1"))
            platform.now = a.not_after + 1
            platform.listed = { b }
            platform.signer = b
            assert.is_true(client:guide("LLA1"):assign("O2"))
            assert.same({ "0BBB" }, serials(client))
        end)
    end)

    describe("merchants without platform certificates", function()
        for _, status in ipairs({ 404, 403 }) do
            it("gets one config error for " .. status .. " and no retry loop", function()
                platform.certificate_status = status
                local client = new_client(platform)
                for _ = 1, 3 do
                    local ok, err = client:guide("LLA1"):update({ name = "x" })
                    assert.is_nil(ok)
                    assert.equals("config", err.kind)
                    assert.matches("public_key", err.message)
                end
                assert.equals(1, platform.downloads)
                platform.now = platform.now + DAY
                assert.is_nil(client:guide("LLA1"):assign("O1"))
                assert.equals(1, platform.downloads)
                assert.is_nil(client:refresh_certificates())
                assert.equals(2, platform.downloads)
            end)
        end
    end)

    describe("migration to the public key", function()
        local pk

        setup(function()
            pk = new_certificate("00", START - DAY, START + 365 * DAY)
            pk.serial = PUBLIC_KEY_ID
        end)

        local function migrating_client()
            return new_client(platform, {
                public_key = helper.openssl("x509 -pubkey -noout", pk.pem),
                public_key_id = PUBLIC_KEY_ID,
            })
        end

        it("verifies by whichever key the serial names", function()
            local client = migrating_client()
            platform.on_call = function() return platform.sign(204, "", pk) end
            assert.is_true(client:guide("LLA1"):assign("O1"))
            assert.equals(0, platform.downloads)
            platform.on_call = function() return platform.sign(204, "", a) end
            assert.is_true(client:guide("LLA1"):assign("O2"))
            assert.equals(1, platform.downloads)
        end)

        it("announces the public key ID on every request", function()
            local client = migrating_client()
            platform.on_call = function() return platform.sign(204, "", a) end
            assert(client:guide("LLA1"):assign("O1"))
            for _, req in ipairs(platform.sent) do
                assert.equals(PUBLIC_KEY_ID, request_header(req, "Wechatpay-Serial"), req.url)
            end
            assert.equals(2, #platform.sent)
        end)

        it("encrypts with the public key", function()
            local client = migrating_client()
            platform.on_call = function() return platform.sign(204, "", pk) end
            assert(client:guide("LLA1"):update({ mobile = "13800138000" }))
            local body = core.json_decode(platform.sent[1].body)
            assert.equals("13800138000", pk.key:decrypt(body.mobile))
        end)

        it("lists the public key and the certificates", function()
            local client = migrating_client()
            platform.on_call = function() return platform.sign(204, "", a) end
            assert(client:guide("LLA1"):assign("O1"))
            local sources = {}
            for _, entry in ipairs(client:certificates()) do
                sources[entry.serial] = entry.source
            end
            assert.equals("public_key", sources[PUBLIC_KEY_ID])
            assert.equals("download", sources["0AAA"])
        end)
    end)

    describe("coroutines", function()
        it("stop waiting for a download at the call's deadline", function()
            platform.on_download = function()
                while true do
                    coroutine.yield()
                end
            end
            local client = new_client(platform, {
                sleep = function() coroutine.yield() end, deadline = 0.5,
            })
            local downloader = coroutine.create(function()
                client:guide("LLA1"):update({ name = "a" })
            end)
            assert(coroutine.resume(downloader))
            local result
            local waiter = coroutine.create(function()
                result = { client:guide("LLA1"):update({ name = "b" }) }
            end)
            for _ = 1, 1000 do
                if coroutine.status(waiter) == "dead" then
                    break
                end
                assert(coroutine.resume(waiter))
            end
            assert.equals("dead", coroutine.status(waiter))
            assert.is_nil(result[1])
            assert.equals("timeout", result[2].reason)
        end)

        it("share one download, the others wait for it", function()
            local scheduled = {}
            local function sleep()
                coroutine.yield()
            end
            platform.on_download = function()
                -- The download takes three turns of the scheduler.
                for _ = 1, 3 do
                    coroutine.yield()
                end
                return platform.sign(200, platform.certificate_list())
            end
            local client = new_client(platform, { sleep = sleep })
            local results = {}
            for i = 1, 5 do
                scheduled[i] = coroutine.create(function()
                    results[i] = { client:guide("LLA1"):update({ name = "n" .. i }) }
                end)
            end
            local running = true
            while running do
                running = false
                for _, co in ipairs(scheduled) do
                    if coroutine.status(co) ~= "dead" then
                        assert(coroutine.resume(co))
                        running = true
                    end
                end
            end
            assert.equals(1, platform.downloads)
            for i = 1, 5 do
                assert.is_true(results[i][1], tostring(results[i][2]))
            end
        end)
    end)
end)
