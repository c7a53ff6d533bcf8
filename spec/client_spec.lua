-- The client without a server: configuration, input checks, request
-- building and response verification, through a transport function that
-- records each request and answers with responses signed here.
local core = require("wechatpay.core")
local helper = require("helper")
local wechatpay = require("wechatpay")

local NOW = 1700000000
local PUBLIC_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"

-- Test keys made once for the whole file: the merchant's and the
-- platform's (as a WeChat Pay public key).
local keys = {}

local function make_keys()
    local dir = helper.tmpdir()
    keys.merchant_pem = core.generate_test_key(2048)
    keys.merchant_file = helper.write(dir .. "/merchant_test_key.pem", keys.merchant_pem)
    keys.merchant = assert(core.load_private_key(keys.merchant_pem))
    keys.platform_pem = core.generate_test_key(2048)
    keys.platform = assert(core.load_private_key(keys.platform_pem))
    local cert = core.issue_test_certificate({
        key = keys.platform_pem, serial = "0A1B2C", common_name = "platform test",
        not_before = NOW - 86400, not_after = NOW + 86400,
    })
    keys.platform_public_pem = cert
    keys.platform_public = assert(core.load_public_key(cert))
end

-- Signs a response the way the platform does.
local function signed(status, body, overrides)
    local headers = {
        ["wechatpay-timestamp"] = tostring(NOW),
        ["wechatpay-nonce"] = core.nonce(),
        ["wechatpay-serial"] = PUBLIC_KEY_ID,
        ["request-id"] = "08F0C4A5B0060010",
    }
    local message = core.response_message(headers["wechatpay-timestamp"],
        headers["wechatpay-nonce"], body)
    headers["wechatpay-signature"] = keys.platform:sign(message)
    for k, v in pairs(overrides or {}) do
        headers[k] = v ~= false and v or nil
    end
    return { status = status, headers = headers, body = body }
end

-- A transport that records requests and answers from a queue.
local function fake_transport()
    local t = { sent = {}, replies = {} }
    function t.send(req)
        t.sent[#t.sent + 1] = req
        local reply = table.remove(t.replies, 1)
        if type(reply) == "function" then
            return reply(req)
        end
        return reply or signed(204, "")
    end
    return t
end

local function new_client(transport, extra)
    local opts = {
        mchid = "1900000109",
        serial_no = "5F1C72E2A8931B72A2E13AF8DEE92471EB397115",
        private_key_file = keys.merchant_file,
        public_key = keys.platform_public_pem,
        public_key_id = PUBLIC_KEY_ID,
        base_url = "https://api.mch.weixin.qq.com",
        clock = function() return NOW end,
        transport = transport and transport.send or nil,
    }
    -- false in extra removes an option.
    for k, v in pairs(extra or {}) do
        opts[k] = v ~= false and v or nil
    end
    return wechatpay.new(opts)
end

-- Returns the header value named name (any case) of a recorded request.
local function request_header(req, name)
    for _, line in ipairs(req.headers) do
        local k, v = line:match("^([^:]+):%s*(.*)$")
        if k and k:lower() == name:lower() then
            return v
        end
    end
    return nil
end

local function guide_fields(extra)
    local fields = {
        store_id = 1234, corpid = "wwd3ca1b4c1cd9b6a8", userid = "robert",
        name = "张三", mobile = "13800138000",
        qr_code = "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=abc",
        avatar = "https://wx.qlogo.cn/mmopen/avatar",
    }
    for k, v in pairs(extra or {}) do
        fields[k] = v ~= false and v or nil
    end
    return fields
end

describe("client", function()
    setup(make_keys)
    teardown(helper.cleanup)

    describe("configuration", function()
        local function config_error(extra)
            local client, err = new_client(nil, extra)
            assert.is_nil(client)
            assert.equals("config", err.kind)
            return err
        end

        it("accepts a complete public key configuration", function()
            local client, err = new_client(nil)
            assert.is_nil(err)
            assert.truthy(client)
            client:close()
        end)

        it("raises when options are not a table", function()
            assert.has_error(function() wechatpay.new("x") end,
                "bad argument #1 to 'new' (table expected, got string)")
        end)

        it("rejects an unknown option by name", function()
            local err = config_error({ tiemout = 3 })
            assert.equals("tiemout", err.field)
            assert.matches("unknown option", err.message)
        end)

        it("rejects a missing mchid", function()
            assert.equals("mchid", config_error({ mchid = false }).field)
        end)

        it("rejects a mchid with a quote", function()
            assert.equals("mchid", config_error({ mchid = '19"00' }).field)
        end)

        it("rejects a missing private key", function()
            local err = config_error({ private_key_file = false })
            assert.equals("private_key", err.field)
        end)

        it("rejects an unreadable key file naming it", function()
            local err = config_error({ private_key_file = "/nonexistent/key.pem" })
            assert.equals("private_key_file", err.field)
            assert.matches("/nonexistent/key.pem", err.message, 1, true)
        end)

        it("rejects a certificate given as private key", function()
            local err = config_error({ private_key_file = false,
                private_key = keys.platform_public_pem })
            assert.matches("expected a private key", err.message)
            assert.matches("CERTIFICATE", err.message)
        end)

        it("rejects both private_key and private_key_file", function()
            local err = config_error({ private_key = keys.merchant_pem })
            assert.matches("not both", err.message)
        end)

        it("rejects an APIv3 key that is not 32 bytes", function()
            local err = config_error({ apiv3_key = ("k"):rep(31) })
            assert.equals("apiv3_key", err.field)
            assert.matches("32%-byte", err.message)
            assert.matches("31 bytes", err.message)
        end)

        it("requires one verification mode", function()
            local err = config_error({ public_key = false, public_key_id = false })
            assert.matches("apiv3_key", err.message)
            assert.matches("public_key", err.message)
        end)

        it("requires public_key_id with public_key", function()
            assert.equals("public_key_id", config_error({ public_key_id = false }).field)
        end)

        it("rejects public_key_id without public_key", function()
            local err = config_error({ public_key = false, apiv3_key = ("k"):rep(32) })
            assert.equals("public_key_id", err.field)
        end)

        it("rejects a private key as public key", function()
            local err = config_error({ public_key = keys.merchant_pem })
            assert.equals("public_key", err.field)
            assert.matches("expected a public key", err.message)
        end)

        it("rejects plain http off loopback", function()
            local err = config_error({ base_url = "http://api.mch.weixin.qq.com" })
            assert.equals("base_url", err.field)
            assert.matches("https", err.message)
        end)

        it("accepts plain http on loopback", function()
            for _, url in ipairs({ "http://127.0.0.1:8080", "http://localhost:1",
                "http://[::1]:9000", "http://127.1.2.3" }) do
                local client, err = new_client(nil, { base_url = url })
                assert.is_nil(err, url)
                client:close()
            end
        end)

        it("rejects a base_url with a path", function()
            assert.equals("base_url", config_error({
                base_url = "https://api.mch.weixin.qq.com/v3" }).field)
        end)

        it("rejects a zero timeout", function()
            assert.equals("timeout", config_error({ timeout = 0 }).field)
        end)

        it("keeps a PEM given as a file path out of the message", function()
            local err = config_error({ private_key_file = keys.merchant_pem })
            assert.equals("private_key_file", err.field)
            assert.matches("PEM text", err.message)
            assert.is_nil(err.message:find("MII", 1, true))
            assert.is_nil(tostring(err):find(keys.merchant_pem:sub(30, 60), 1, true))
        end)

        it("keeps a key body given as a file path out of the message", function()
            local body = keys.merchant_pem:match("\n([A-Za-z0-9+/=]+)\n")
            local err = config_error({ private_key_file = body })
            assert.equals("private_key_file", err.field)
            assert.is_nil(err.message:find(body, 1, true))
            assert.matches("bytes", err.message)
        end)

        it("keeps an APIv3 key given as a path out of the message", function()
            local secret = "0123456789abcdefABCDEF0123456789"
            local err = config_error({ public_key = false, public_key_file = secret })
            assert.is_nil(err.message:find(secret, 1, true))
        end)

        it("keeps an odd option name out of the message", function()
            local err = config_error({ ["0123456789abcdefABCDEF0123456789"] = 1 })
            assert.is_nil(tostring(err):find("0123456789abcdef", 1, true))
        end)

        it("rejects a base_url with a port that is not a number", function()
            assert.equals("base_url", config_error({ base_url = "http://127.0.0.1:abc" }).field)
        end)

        it("rejects a missing ca_file at once", function()
            assert.equals("ca_file", config_error({ ca_file = "/nonexistent/ca.pem" }).field)
        end)

        it("rejects a folder as key file", function()
            local err = config_error({ private_key_file = "/tmp" })
            assert.equals("private_key_file", err.field)
            assert.matches("not a regular file", err.message)
        end)

        it("rejects a timeout under a millisecond", function()
            assert.equals("timeout", config_error({ timeout = 0.0004 }).field)
            assert.equals("connect_timeout", config_error({ connect_timeout = 0.0001 }).field)
        end)

        it("rejects a fractional max_response_size", function()
            assert.equals("max_response_size", config_error({ max_response_size = 0.5 }).field)
        end)

        it("rejects a malformed proxy", function()
            assert.equals("proxy", config_error({ proxy = "not a url" }).field)
        end)

        it("keeps secrets out of tostring", function()
            local client = assert(new_client(nil, {
                apiv3_key = "0123456789abcdef0123456789ABCDEF",
            }))
            local text = tostring(client)
            assert.matches("1900000109", text)
            assert.not_matches("0123456789abcdef", text)
            assert.not_matches("PRIVATE", text)
            assert.not_matches(keys.merchant_pem:sub(40, 60), text, 1, true)
            client:close()
        end)
    end)

    describe("register_guide", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport))
        end)

        after_each(function()
            client:close()
        end)

        it("sends encrypted name and mobile with the key's serial", function()
            transport.replies[1] = signed(200, '{"guide_id":"LLA3WJ6DSZUfiaZDS79FH5Wm5m4X69TBic"}')
            local guide, err = client:register_guide(guide_fields())
            assert.is_nil(err)
            assert.equals("LLA3WJ6DSZUfiaZDS79FH5Wm5m4X69TBic", guide.guide_id)

            local req = transport.sent[1]
            assert.equals("POST", req.method)
            assert.equals("https://api.mch.weixin.qq.com/v3/smartguide/guides", req.url)
            assert.equals(PUBLIC_KEY_ID, request_header(req, "Wechatpay-Serial"))
            assert.equals("application/json", request_header(req, "Content-Type"))
            assert.equals("application/json", request_header(req, "Accept"))
            local body = assert(core.json_decode(req.body))
            assert.equals(1234, body.store_id)
            assert.equals(math.type(body.store_id), "integer")
            assert.not_equals("张三", body.name)
            assert.equals("张三", keys.platform:decrypt(body.name))
            assert.equals("13800138000", keys.platform:decrypt(body.mobile))
        end)

        it("signs exactly the bytes it sends", function()
            transport.replies[1] = signed(200, '{"guide_id":"LLA1"}')
            assert(client:register_guide(guide_fields()))
            local req = transport.sent[1]
            local auth = request_header(req, "Authorization")
            local nonce = auth:match('nonce_str="([^"]+)"')
            local ts = tonumber(auth:match('timestamp="(%d+)"'))
            local sig = auth:match('signature="([^"]+)"')
            assert.matches('^WECHATPAY2%-SHA256%-RSA2048 ', auth)
            assert.matches('mchid="1900000109"', auth)
            assert.matches('serial_no="5F1C72E2A8931B72A2E13AF8DEE92471EB397115"', auth)
            assert.equals(NOW, ts)
            local message = core.request_message("POST", "/v3/smartguide/guides", ts, nonce,
                req.body)
            local merchant_public = core.load_public_key(
                helper.openssl("pkey -pubout", keys.merchant_pem))
            assert.is_true(merchant_public:verify(message, sig))
        end)

        it("uses a fresh nonce for every request", function()
            assert(client:guide("LLA1"):assign("ORDER1"))
            assert(client:guide("LLA1"):assign("ORDER2"))
            local a = request_header(transport.sent[1], "Authorization"):match('nonce_str="(%x+)"')
            local b = request_header(transport.sent[2], "Authorization"):match('nonce_str="(%x+)"')
            assert.equals(32, #a)
            assert.not_equals(a, b)
        end)

        it("raises when fields is not a table", function()
            assert.has_error(function() client:register_guide("robert") end,
                "bad argument #1 to 'register_guide' (table expected, got string)")
        end)

        local cases = {
            { "store_id missing", { store_id = false }, "store_id", "integer" },
            { "store_id as a string", { store_id = "1234" }, "store_id", "integer" },
            { "store_id as a fraction", { store_id = 12.5 }, "store_id", "integer" },
            { "corpid missing", { corpid = false }, "corpid", "required" },
            { "userid missing", { userid = false }, "userid", "required" },
            { "userid too long", { userid = ("u"):rep(65) }, "userid", "at most 64" },
            { "name missing", { name = false }, "name", "required" },
            { "name empty", { name = "" }, "name", "empty" },
            { "name over 64 bytes", { name = ("张"):rep(22) }, "name", "at most 64 bytes" },
            { "name with an emoji", { name = "张三\u{1F600}" }, "name", "4%-byte" },
            { "name with invalid UTF-8", { name = "\xff\xfe" }, "name", "invalid UTF%-8" },
            { "name as a number", { name = 42 }, "name", "string" },
            { "mobile over 32 bytes", { mobile = ("1"):rep(33) }, "mobile", "at most 32" },
            { "mobile missing", { mobile = false }, "mobile", "required" },
            { "qr_code missing", { qr_code = false }, "qr_code", "required" },
            { "qr_code too long", { qr_code = ("q"):rep(1025) }, "qr_code", "1024" },
            { "avatar missing", { avatar = false }, "avatar", "required" },
            { "group_qrcode too long", { group_qrcode = ("g"):rep(1025) }, "group_qrcode",
                "1024" },
            { "an unknown field", { nickname = "x" }, "nickname", "unknown field" },
            { "a NUL in sub_mchid", { sub_mchid = "19\0" }, "sub_mchid", "control" },
            { "a newline in userid", { userid = "rob\nert" }, "userid", "control" },
            { "a NUL in name", { name = "张\0三" }, "name", "control" },
        }
        for _, case in ipairs(cases) do
            it("rejects " .. case[1] .. " before sending", function()
                local guide, err = client:register_guide(guide_fields(case[2]))
                assert.is_nil(guide)
                assert.equals("input", err.kind)
                assert.equals(case[3], err.field)
                assert.matches(case[4], err.message)
                assert.equals(0, #transport.sent)
            end)
        end

        it("accepts a name of exactly 64 bytes", function()
            transport.replies[1] = signed(200, '{"guide_id":"LLA1"}')
            local name = ("张"):rep(21) .. "a"
            assert.equals(64, #name)
            assert.truthy(client:register_guide(guide_fields({ name = name })))
        end)

        it("accepts a float store_id with an integral value", function()
            transport.replies[1] = signed(200, '{"guide_id":"LLA1"}')
            assert.truthy(client:register_guide(guide_fields({ store_id = 1234.0 })))
            assert.matches('"store_id":1234[,}]', transport.sent[1].body)
        end)

        it("sends sub_mchid for a service provider", function()
            local partner = assert(new_client(transport, { sub_mchid = "1900000110" }))
            transport.replies[1] = signed(200, '{"guide_id":"LLA1"}')
            assert.truthy(partner:register_guide(guide_fields()))
            assert.equals("1900000110", core.json_decode(transport.sent[1].body).sub_mchid)
            partner:close()
        end)

        it("reports a missing guide_id as an api error", function()
            transport.replies[1] = signed(200, '{}')
            local guide, err = client:register_guide(guide_fields())
            assert.is_nil(guide)
            assert.equals("api", err.kind)
        end)
    end)

    describe("assign", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport))
        end)

        after_each(function()
            client:close()
        end)

        it("posts out_trade_no and accepts 204", function()
            local guide = client:guide("LLA3WJ6DSZUfiaZDS79FH5Wm5m4X69TBic")
            local ok, err = guide:assign("1217752501201407033233368018")
            assert.is_nil(err)
            assert.is_true(ok)
            local req = transport.sent[1]
            assert.equals("https://api.mch.weixin.qq.com/v3/smartguide/guides/"
                .. "LLA3WJ6DSZUfiaZDS79FH5Wm5m4X69TBic/assign", req.url)
            assert.same({ out_trade_no = "1217752501201407033233368018" },
                core.json_decode(req.body))
        end)

        it("percent-encodes the guide_id once", function()
            assert(client:guide("a/b c%"):assign("X"))
            assert.equals("https://api.mch.weixin.qq.com/v3/smartguide/guides/a%2Fb%20c%25/assign",
                transport.sent[1].url)
            local auth = request_header(transport.sent[1], "Authorization")
            assert.truthy(auth)
        end)

        for _, bad in ipairs({ "", ("1"):rep(33), "ORDER 1", "订单", "A#B", "a.b" }) do
            it("rejects out_trade_no " .. string.format("%q", bad), function()
                local ok, err = client:guide("LLA1"):assign(bad)
                assert.is_nil(ok)
                assert.equals("input", err.kind)
                assert.equals("out_trade_no", err.field)
                assert.equals(0, #transport.sent)
            end)
        end

        it("accepts every allowed character", function()
            assert.is_true(client:guide("LLA1"):assign("Az09-_|*"))
        end)

        it("raises for a non-string out_trade_no", function()
            assert.has_error(function() client:guide("LLA1"):assign(42) end)
        end)

        for _, dots in ipairs({ ".", ".." }) do
            it("rejects the guide_id " .. dots, function()
                local guide, err = client:guide(dots)
                assert.is_nil(guide)
                assert.equals("guide_id", err.field)
            end)
        end

        it("rejects an empty guide_id", function()
            local guide, err = client:guide("")
            assert.is_nil(guide)
            assert.equals("guide_id", err.field)
        end)

        it("rejects a guide_id over 64 bytes", function()
            local guide, err = client:guide(("g"):rep(65))
            assert.is_nil(guide)
            assert.equals("guide_id", err.field)
        end)
    end)

    describe("update", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport))
        end)

        after_each(function()
            client:close()
        end)

        it("patches only the given fields", function()
            assert.is_true(client:guide("LLA1"):update({ avatar = "https://a/b.png" }))
            local req = transport.sent[1]
            assert.equals("PATCH", req.method)
            assert.same({ avatar = "https://a/b.png" }, core.json_decode(req.body))
        end)

        it("encrypts a new mobile", function()
            assert.is_true(client:guide("LLA1"):update({ mobile = "13900139000" }))
            local body = core.json_decode(transport.sent[1].body)
            assert.equals("13900139000", keys.platform:decrypt(body.mobile))
            assert.equals(PUBLIC_KEY_ID, request_header(transport.sent[1], "Wechatpay-Serial"))
        end)

        it("rejects an empty update", function()
            local ok, err = client:guide("LLA1"):update({})
            assert.is_nil(ok)
            assert.equals("input", err.kind)
            assert.matches("nothing to update", err.message)
        end)

        it("rejects an unknown field", function()
            local ok, err = client:guide("LLA1"):update({ store_id = 1 })
            assert.is_nil(ok)
            assert.equals("store_id", err.field)
        end)
    end)

    describe("query_guides", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport))
        end)

        after_each(function()
            client:close()
        end)

        local function merchant_public()
            return core.load_public_key(helper.openssl("pkey -pubout", keys.merchant_pem))
        end

        it("decrypts name and mobile in the result", function()
            local pub = merchant_public()
            local body = core.json_encode({
                total_count = 1, limit = 10, offset = 0,
                data = { { guide_id = "LLA1", store_id = 1234, userid = "robert",
                    name = pub:encrypt("张三"), mobile = pub:encrypt("13800138000"),
                    work_id = "" } },
            })
            transport.replies[1] = signed(200, body)
            local page, err = client:query_guides({ store_id = 1234, userid = "robert" })
            assert.is_nil(err)
            assert.equals(1, page.total_count)
            assert.equals("张三", page.data[1].name)
            assert.equals("13800138000", page.data[1].mobile)
            assert.equals("LLA1", page.data[1].guide_id)
            assert.equals("wechatpay.Guide LLA1", tostring(page.data[1]))
            assert.equals("https://api.mch.weixin.qq.com/v3/smartguide/guides?store_id=1234"
                .. "&userid=robert", transport.sent[1].url)
        end)

        it("percent-encodes the encrypted mobile and signs that URL", function()
            transport.replies[1] = signed(200, '{"total_count":0,"limit":10,"offset":0,"data":[]}')
            assert(client:query_guides({ store_id = 1234, mobile = "13800138000" }))
            local req = transport.sent[1]
            local encoded = req.url:match("mobile=([^&]+)")
            assert.not_matches("[+/=]", encoded)
            local cipher = encoded:gsub("%%(%x%x)", function(h)
                return string.char(tonumber(h, 16))
            end)
            assert.equals("13800138000", keys.platform:decrypt(cipher))
            local auth = request_header(req, "Authorization")
            local message = core.request_message("GET", req.url:match("^https://[^/]+(.*)$"),
                NOW, auth:match('nonce_str="([^"]+)"'), "")
            assert.is_true(merchant_public():verify(message, auth:match('signature="([^"]+)"')))
            assert.is_nil(req.body)
            assert.equals(PUBLIC_KEY_ID, request_header(req, "Wechatpay-Serial"))
        end)

        it("orders the query as the platform's example", function()
            transport.replies[1] = signed(200, '{"total_count":0,"data":[]}')
            local partner = assert(new_client(transport, { sub_mchid = "1900000110" }))
            assert(partner:query_guides({ offset = 0, limit = 5, work_id = "w1", store_id = 7,
                userid = "u1" }))
            local path = transport.sent[1].url:match("^https://[^/]+(.*)$")
            assert.equals("/v3/smartguide/guides?sub_mchid=1900000110&store_id=7&userid=u1"
                .. "&work_id=w1&limit=5&offset=0", path)
            partner:close()
        end)

        for _, case in ipairs({
            { { store_id = 1, limit = 11 }, "limit" },
            { { store_id = 1, limit = 0 }, "limit" },
            { { store_id = 1, offset = -1 }, "offset" },
            { { store_id = "1" }, "store_id" },
            { {}, "store_id" },
            { { store_id = 1, page = 2 }, "page" },
        }) do
            it("rejects " .. case[2] .. " " .. tostring(case[1][case[2]]), function()
                local page, err = client:query_guides(case[1])
                assert.is_nil(page)
                assert.equals("input", err.kind)
                assert.equals(case[2], err.field)
                assert.equals(0, #transport.sent)
            end)
        end

        it("reports an undecryptable name as a decrypt error", function()
            transport.replies[1] = signed(200, core.json_encode({ total_count = 1,
                data = { { guide_id = "LLA9", name = keys.platform_public:encrypt("x") } } }))
            local page, err = client:query_guides({ store_id = 1 })
            assert.is_nil(page)
            assert.equals("decrypt", err.kind)
            assert.matches("LLA9", err.message)
        end)

        for _, case in ipairs({
            { "items that are not objects", '{"data":[1,"x"]}' },
            { "an item without guide_id", '{"data":[{"name":"x"}]}' },
            { "a total_count that is text", '{"total_count":"many","data":[]}' },
            { "data that is not a list", '{"data":"x"}' },
            { "a body that is a list", '[]' },
        }) do
            it("reports " .. case[1] .. " as an api error", function()
                transport.replies[1] = signed(200, case[2])
                local page, err = client:query_guides({ store_id = 1 })
                assert.is_nil(page)
                assert.equals("api", err.kind)
                assert.equals(200, err.status)
            end)
        end

        it("keeps unknown result fields in guide.data", function()
            transport.replies[1] = signed(200, '{"data":[{"guide_id":"LLA1","update":"x",'
                .. '"new_field":7}]}')
            local page = assert(client:query_guides({ store_id = 1 }))
            local guide = page.data[1]
            assert.equals("function", type(guide.update))
            assert.equals("x", guide.data.update)
            assert.equals(7, guide.data.new_field)
            assert.is_true(guide:update({ avatar = "https://a/b.png" }))
        end)

        it("walks every page with each_guide", function()
            local pub = merchant_public()
            local function page(offset, count, total)
                local data = {}
                for i = 1, count do
                    data[i] = { guide_id = "G" .. (offset + i), name = pub:encrypt("n"),
                        mobile = pub:encrypt("m") }
                end
                return signed(200, core.json_encode({ total_count = total, limit = 10,
                    offset = offset, data = #data > 0 and data or core.empty_array }))
            end
            transport.replies = { page(0, 10, 23), page(10, 10, 23), page(20, 3, 23) }
            local seen = {}
            for guide, err in client:each_guide({ store_id = 1 }) do
                assert.is_nil(err)
                seen[#seen + 1] = guide.guide_id
            end
            assert.equals(23, #seen)
            assert.equals("G23", seen[23])
            assert.equals(3, #transport.sent)
            assert.matches("offset=20", transport.sent[3].url)
        end)

        it("hands an error to the each_guide loop once", function()
            transport.replies = { signed(500, '{"code":"SYSTEM_ERROR","message":"系统错误"}') }
            local results = {}
            for guide, err in client:each_guide({ store_id = 1 }) do
                results[#results + 1] = { guide, err }
            end
            assert.equals(1, #results)
            assert.is_false(results[1][1])
            assert.equals("api", results[1][2].kind)
        end)
    end)

    describe("response verification", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport, { retries = 0 }))
        end)

        after_each(function()
            client:close()
        end)

        local function assign_fails_with(reply)
            transport.replies[1] = reply
            local ok, err = client:guide("LLA1"):assign("X1")
            assert.is_nil(ok)
            return err
        end

        for _, name in ipairs({ "wechatpay-timestamp", "wechatpay-nonce",
            "wechatpay-signature", "wechatpay-serial" }) do
            it("fails when " .. name .. " is missing", function()
                local err = assign_fails_with(signed(204, "", { [name] = false }))
                assert.equals("verify", err.kind)
                assert.equals("missing", err.reason)
                assert.matches("missing", err.message)
            end)
        end

        it("fails on a signature over other bytes", function()
            local reply = signed(200, '{"a":1}')
            reply.body = '{"a":2}'
            local err = assign_fails_with(reply)
            assert.equals("verify", err.kind)
            assert.equals("signature", err.reason)
        end)

        it("treats the SIGNTEST probe as a failure", function()
            local err = assign_fails_with(signed(204, "", {
                ["wechatpay-signature"] = "WECHATPAY/SIGNTEST/MTIzNDU2Nzg5MA==" }))
            assert.equals("verify", err.kind)
            assert.equals("probe", err.reason)
        end)

        it("fails on a timestamp five minutes off", function()
            local err = assign_fails_with(signed(204, "", {
                ["wechatpay-timestamp"] = tostring(NOW - 300) }))
            assert.equals("stale", err.reason)
            assert.matches("clock", err.message)
        end)

        it("fails on an unknown serial", function()
            local err = assign_fails_with(signed(204, "", {
                ["wechatpay-serial"] = "PUB_KEY_ID_OTHER" }))
            assert.equals("serial", err.reason)
            assert.matches("PUB_KEY_ID_OTHER", err.message)
        end)

        it("fails on a 2xx body that is not JSON", function()
            local err = assign_fails_with(signed(200, "<html>"))
            assert.equals("api", err.kind)
            assert.matches("not valid JSON", err.message)
        end)

        it("maps a platform error without verifying it", function()
            local err = assign_fails_with({ status = 400, headers = { ["request-id"] = "R1" },
                body = '{"code":"PARAM_ERROR","message":"商户订单号过长",'
                    .. '"detail":{"field":"/out_trade_no","location":"body"}}' })
            assert.equals("api", err.kind)
            assert.equals(400, err.status)
            assert.equals("PARAM_ERROR", err.code)
            assert.equals("商户订单号过长", err.message)
            assert.equals("/out_trade_no", err.detail.field)
            assert.equals("R1", err.request_id)
            assert.equals("wechatpay: api error: HTTP 400 PARAM_ERROR: 商户订单号过长 "
                .. "(Request-ID R1)", tostring(err))
        end)

        it("maps an error body that is not JSON", function()
            local err = assign_fails_with({ status = 502, headers = {}, body = "Bad Gateway" })
            assert.equals("api", err.kind)
            assert.equals(502, err.status)
            assert.is_nil(err.code)
            assert.matches("Bad Gateway", err.message)
        end)

        it("passes a transport failure through as a network error", function()
            transport.replies[1] = function() return nil, "connection refused" end
            local ok, err = client:guide("LLA1"):assign("X1")
            assert.is_nil(ok)
            assert.equals("network", err.kind)
            assert.matches("connection refused", err.message)
        end)
    end)

    describe("request", function()
        local transport, client

        before_each(function()
            transport = fake_transport()
            client = assert(new_client(transport))
        end)

        after_each(function()
            client:close()
        end)

        it("returns the decoded body and the Request-ID", function()
            transport.replies[1] = signed(200, '{"n":9007199254740993}')
            local res, err = client:request("GET", "/v3/anything", {
                query = { b = "2", a = "1 1" },
            })
            assert.is_nil(err)
            assert.equals(200, res.status)
            assert.equals(9007199254740993, res.data.n)
            assert.equals("08F0C4A5B0060010", res.request_id)
            assert.equals("https://api.mch.weixin.qq.com/v3/anything?a=1%201&b=2",
                transport.sent[1].url)
        end)

        it("sends a JSON string body unchanged", function()
            local body = '{ "b": 1,  "a": "张" }'
            assert(client:request("POST", "/v3/x", { body = body }))
            assert.equals(body, transport.sent[1].body)
        end)

        it("rejects a body that cannot be JSON", function()
            local res, err = client:request("POST", "/v3/x", { body = { f = print } })
            assert.is_nil(res)
            assert.equals("input", err.kind)
            assert.matches("body: f", err.message)
        end)

        it("rejects a path with a query", function()
            local res, err = client:request("GET", "/v3/x?a=1")
            assert.is_nil(res)
            assert.equals("path", err.field)
        end)

        it("rejects an unknown method", function()
            local res, err = client:request("TRACE", "/v3/x")
            assert.is_nil(res)
            assert.equals("method", err.field)
        end)

        it("raises for a non-string path", function()
            assert.has_error(function() client:request("GET", 42) end)
        end)

        for _, case in ipairs({
            { "a dot segment", "/v3/x/../certificates" },
            { "a single dot segment", "/v3/./certificates" },
            { "non-ASCII text", "/v3/证书" },
            { "a control byte", "/v3/x\1y" },
            { "a space", "/v3/a b" },
        }) do
            it("rejects a path with " .. case[1], function()
                local res, err = client:request("GET", case[2])
                assert.is_nil(res)
                assert.equals("path", err.field)
                assert.equals(0, #transport.sent)
            end)
        end

        it("rejects a query string with a fragment", function()
            local res, err = client:request("GET", "/v3/x", { query = "a=1#f" })
            assert.is_nil(res)
            assert.equals("query", err.field)
        end)

        it("rejects a query value that is a table", function()
            local res, err = client:request("GET", "/v3/x", { query = { a = {} } })
            assert.is_nil(res)
            assert.equals("query", err.field)
        end)

        it("rejects a body on GET", function()
            local res, err = client:request("GET", "/v3/x", { body = { a = 1 } })
            assert.is_nil(res)
            assert.equals("body", err.field)
        end)

        it("rejects a header value with a line break", function()
            local res, err = client:request("GET", "/v3/x", {
                headers = { ["X-A"] = "1\r\nX-Injected: yes" } })
            assert.is_nil(res)
            assert.equals("headers", err.field)
            assert.equals(0, #transport.sent)
        end)

        it("rejects a serial with a line break", function()
            local res, err = client:request("GET", "/v3/x", { serial = "S\r\nX-B: 1" })
            assert.is_nil(res)
            assert.equals("headers", err.field)
        end)

        it("rejects a header value that is a table", function()
            local res, err = client:request("GET", "/v3/x", { headers = { ["X-A"] = {} } })
            assert.is_nil(res)
            assert.equals("headers", err.field)
        end)

        it("rejects an Authorization header", function()
            local res, err = client:request("GET", "/v3/x", {
                headers = { authorization = "x" } })
            assert.is_nil(res)
            assert.equals("headers", err.field)
        end)

        it("rejects an unknown request option", function()
            local res, err = client:request("GET", "/v3/x", { querry = { a = 1 } })
            assert.is_nil(res)
            assert.equals("querry", err.field)
        end)

        it("sends a DELETE body when given", function()
            assert(client:request("DELETE", "/v3/x", { body = { a = 1 } }))
            assert.equals('{"a":1}', transport.sent[1].body)
        end)

        it("returns errors, not raises, after close", function()
            client:close()
            local guide, gerr = client:register_guide(guide_fields())
            assert.is_nil(guide)
            assert.equals("config", gerr.kind)
            local page, qerr = client:query_guides({ store_id = 1, mobile = "13800138000" })
            assert.is_nil(page)
            assert.equals("config", qerr.kind)
            local event, nerr = client:parse_notification({}, "{}")
            assert.is_nil(event)
            assert.equals("config", nerr.kind)
        end)

        it("reports encrypt and decrypt after close", function()
            client:close()
            local cipher, err = client:encrypt("x")
            assert.is_nil(cipher)
            assert.equals("config", err.kind)
            local plain, derr = client:decrypt("x")
            assert.is_nil(plain)
            assert.equals("config", derr.kind)
            local list, lerr = client:certificates()
            assert.is_nil(list)
            assert.equals("config", lerr.kind)
        end)

        it("fails after close", function()
            client:close()
            local res, err = client:request("GET", "/v3/x")
            assert.is_nil(res)
            assert.equals("config", err.kind)
        end)
    end)
end)
