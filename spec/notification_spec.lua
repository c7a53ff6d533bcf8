-- client:parse_notification: a callback verified like a response, then
-- its resource decrypted with the APIv3 key.
local core = require("wechatpay.core")
local helper = require("helper")
local wechatpay = require("wechatpay")

local APIV3_KEY = "Lcpy6nAcDj8V7wlTXYqUdMJqRm0pXx3E"
local NOW = 1800000000
local SERIAL = "3C4E5F"

local keys = {}

local function setup_keys()
    keys.merchant_pem = core.generate_test_key(2048)
    local platform_pem = core.generate_test_key(2048)
    keys.platform = assert(core.load_private_key(platform_pem))
    keys.platform_cert = core.issue_test_certificate({
        key = platform_pem, serial = SERIAL, common_name = "platform",
        not_before = NOW - 86400, not_after = NOW + 86400,
    })
    keys.aead = assert(core.new_aead_key(APIV3_KEY))
end

local function new_client(extra)
    local opts = {
        mchid = "1900000109",
        serial_no = "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C",
        private_key = keys.merchant_pem,
        apiv3_key = APIV3_KEY,
        platform_certificates = { keys.platform_cert },
        base_url = "http://127.0.0.1:1",
        clock = function() return NOW end,
    }
    for k, v in pairs(extra or {}) do
        opts[k] = v ~= false and v or nil
    end
    return assert(wechatpay.new(opts))
end

local RESOURCE = '{"mchid":"1900000109","out_trade_no":"1217752501201407033233368018",'
    .. '"trade_state":"SUCCESS"}'

-- Builds a signed callback: headers (names as the platform writes them)
-- and the raw body.
local function callback(opts)
    opts = opts or {}
    local nonce = "fdasflkja484"
    local resource = {
        original_type = "transaction", algorithm = "AEAD_AES_256_GCM",
        ciphertext = (opts.aead or keys.aead):encrypt(nonce, opts.aad or "transaction",
            opts.plaintext or RESOURCE),
        nonce = nonce,
    }
    if opts.aad_field == "null" then
        resource.associated_data = core.null
    elseif opts.aad_field ~= "absent" then
        resource.associated_data = opts.aad or "transaction"
    end
    local body = opts.body or core.json_encode({
        id = "EV-2018022511223320873", create_time = "2027-01-15T13:29:35+08:00",
        resource_type = "encrypt-resource", event_type = "TRANSACTION.SUCCESS",
        summary = "支付成功", resource = resource,
    })
    local headers = {
        ["Wechatpay-Timestamp"] = tostring(opts.timestamp or NOW),
        ["Wechatpay-Nonce"] = "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
        ["Wechatpay-Serial"] = SERIAL,
        ["Wechatpay-Signature-Type"] = "WECHATPAY2-SHA256-RSA2048",
    }
    headers["Wechatpay-Signature"] = keys.platform:sign(core.response_message(
        headers["Wechatpay-Timestamp"], headers["Wechatpay-Nonce"], body))
    return headers, body
end

describe("parse_notification", function()
    setup(setup_keys)
    teardown(helper.cleanup)

    it("returns the event with its resource decrypted", function()
        local client = new_client()
        local event, err = client:parse_notification(callback())
        assert.is_nil(err)
        assert.equals("TRANSACTION.SUCCESS", event.event_type)
        assert.equals("支付成功", event.summary)
        assert.equals("SUCCESS", event.resource.trade_state)
        assert.equals("1217752501201407033233368018", event.resource.out_trade_no)
    end)

    it("accepts header names in any case", function()
        local headers, body = callback()
        local lower, upper = {}, {}
        for k, v in pairs(headers) do
            lower[k:lower()] = v
            upper[k:upper()] = v
        end
        local client = new_client()
        assert.truthy(client:parse_notification(lower, body))
        assert.truthy(client:parse_notification(upper, body))
    end)

    for _, variant in ipairs({ "empty", "absent", "null" }) do
        it("treats " .. variant .. " associated_data as empty", function()
            local headers, body = callback({ aad = "", aad_field = variant })
            local event, err = new_client():parse_notification(headers, body)
            assert.is_nil(err)
            assert.equals("SUCCESS", event.resource.trade_state)
        end)
    end

    it("keeps a resource that is not JSON as text", function()
        local event = assert(new_client():parse_notification(callback({ plaintext = "plain" })))
        assert.equals("plain", event.resource)
    end)

    local function fails(step, kind, headers, body, client)
        local event, err = (client or new_client()):parse_notification(headers, body)
        assert.is_nil(event)
        assert.equals(step, err.step)
        assert.equals(kind, err.kind)
        return err
    end

    it("refuses the SIGNTEST probe", function()
        local headers, body = callback()
        headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" .. headers["Wechatpay-Signature"]
        local err = fails("verify", "verify", headers, body)
        assert.equals("probe", err.reason)
        assert.matches("notification", err.message)
    end)

    it("refuses a body changed by one byte", function()
        local headers, body = callback()
        local err = fails("verify", "verify", headers, (body:gsub("支付成功", "支付失败")))
        assert.equals("signature", err.reason)
    end)

    it("refuses a callback five minutes old", function()
        local headers, body = callback({ timestamp = NOW - 300 })
        assert.equals("stale", fails("verify", "verify", headers, body).reason)
    end)

    it("accepts a callback four minutes old", function()
        assert.truthy(new_client():parse_notification(callback({ timestamp = NOW - 240 })))
    end)

    for _, name in ipairs({ "Wechatpay-Signature", "Wechatpay-Serial", "Wechatpay-Nonce",
        "Wechatpay-Timestamp" }) do
        it("refuses a callback without " .. name, function()
            local headers, body = callback()
            headers[name] = nil
            assert.equals("missing", fails("verify", "verify", headers, body).reason)
        end)
    end

    it("refuses one header name in two cases as repeated", function()
        local headers, body = callback()
        headers["wechatpay-signature"] = headers["Wechatpay-Signature"]
        local err = fails("verify", "verify", headers, body)
        assert.equals("missing", err.reason)
        assert.is_nil(err.status)
    end)

    it("refuses a repeated header as missing", function()
        local headers, body = callback()
        headers["Wechatpay-Signature"] = { headers["Wechatpay-Signature"], "x" }
        assert.equals("missing", fails("verify", "verify", headers, body).reason)
    end)

    it("names the decryption step for a wrong APIv3 key", function()
        local headers, body = callback({ aead = assert(core.new_aead_key(("k"):rep(32))) })
        local err = fails("decrypt", "decrypt", headers, body)
        assert.matches("APIv3 key", err.message)
    end)

    it("names the decryption step for other associated data", function()
        local headers, body = callback({ aad = "transaction" })
        local tampered = body:gsub('"associated_data":"transaction"',
            '"associated_data":"refund"')
        headers = callback({ body = tampered })
        fails("decrypt", "decrypt", headers, tampered)
    end)

    it("names the parse step for a body that is not JSON", function()
        local headers, body = callback({ body = "not json" })
        fails("parse", "input", headers, body)
    end)

    it("names the parse step for a missing resource", function()
        local headers, body = callback({ body = '{"id":"EV-1","event_type":"X"}' })
        fails("parse", "input", headers, body)
    end)

    it("names the parse step for another algorithm", function()
        local body = '{"id":"EV-1","resource":{"algorithm":"AEAD_SM4_GCM","nonce":"n",'
            .. '"ciphertext":"c"}}'
        local headers = callback({ body = body })
        fails("parse", "input", headers, body)
    end)

    it("needs the APIv3 key", function()
        local client = new_client({ apiv3_key = false })
        local event, err = client:parse_notification(callback())
        assert.is_nil(event)
        assert.equals("config", err.kind)
    end)

    it("raises for a body that is not a string", function()
        assert.has_error(function() new_client():parse_notification({}, {}) end)
    end)

    describe("known-answer callback", function()
        local case

        setup(function()
            local vectors = helper.vectors()
            for _, c in ipairs(vectors and vectors.verify or {}) do
                if c.certificate then
                    case = c
                end
            end
        end)

        it("verifies the official SDK's callback with its clock", function()
            if not case then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            local client = new_client({
                platform_certificates = { helper.vector_file(case.certificate) },
                clock = function() return tonumber(case.headers["Wechatpay-Timestamp"]) end,
            })
            local headers = {}
            for k, v in pairs(case.headers) do
                headers[k] = v
            end
            headers["Wechatpay-Signature"] = case.signature
            -- Its resource uses a 16-byte key (AES-128-GCM), which no
            -- 32-byte APIv3 key opens: verification passes, decryption
            -- must then fail at its own step.
            local event, err = client:parse_notification(headers, case.body)
            assert.is_nil(event)
            assert.equals("decrypt", err.step)

            headers["Wechatpay-Signature"] = "WECHATPAY/SIGNTEST/" .. case.signature
            event, err = client:parse_notification(headers, case.body)
            assert.is_nil(event)
            assert.equals("verify", err.step)

            local late = new_client({
                platform_certificates = { helper.vector_file(case.certificate) },
            })
            headers["Wechatpay-Signature"] = case.signature
            event, err = late:parse_notification(headers, case.body)
            assert.is_nil(event)
            assert.equals("stale", err.reason)
        end)
    end)
end)
