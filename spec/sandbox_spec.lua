-- Specs for the bundled sandbox (bin/wechatpay-sandbox): they start it
-- as a separate process and talk to it with the core's HTTP client and
-- signing primitives, and with raw sockets where HTTP is the subject.
local core = require("wechatpay.core")
local cqueues = require("cqueues")
local socket = require("cqueues.socket")
local helper = require("helper")

local USER_AGENT = "User-Agent: wechatpay-sandbox-spec/1.0"
local ACCEPT = "Accept: application/json"
local JSON_TYPE = "Content-Type: application/json"

-- {====================================================================
-- Helpers
-- =====================================================================

-- Wraps a sandbox handle with what the specs need: the merchant key, an
-- HTTP client (trusting the test CA under --tls) and the verifying keys.
local function open(sandbox)
    local c = sandbox.config
    local env = {
        sandbox = sandbox,
        config = c,
        merchant_key = assert(core.load_private_key(helper.read(c.private_key_file))),
        http = assert(core.new_http({ timeout = 5, ca_file = c.ca_file })),
        public_key = assert(core.load_public_key(helper.read(c.public_key_file))),
    }
    env.port = tonumber(c.base_url:match(":(%d+)$"))
    return env
end

-- Builds the Authorization header value.  o may override mchid,
-- serial_no, timestamp, nonce and signature, or sign other bytes
-- (sign_target, sign_body).
local function authorization(env, method, target, body, o)
    o = o or {}
    local timestamp = o.timestamp or os.time()
    local nonce = o.nonce or core.nonce()
    local message = core.request_message(method, o.sign_target or target, timestamp, nonce,
        o.sign_body or body or "")
    local signature = o.signature or env.merchant_key:sign(message)
    local fields = {
        'mchid="' .. (o.mchid or env.config.mchid) .. '"',
        'nonce_str="' .. nonce .. '"',
        'timestamp="' .. timestamp .. '"',
        'serial_no="' .. (o.serial_no or env.config.serial_no) .. '"',
        'signature="' .. signature .. '"',
    }
    if o.reverse_fields then
        local reversed = {}
        for i = #fields, 1, -1 do
            reversed[#reversed + 1] = fields[i]
        end
        fields = reversed
    end
    return "WECHATPAY2-SHA256-RSA2048 " .. table.concat(fields, ","), nonce
end

-- Sends a signed /v3/ request.  o: the authorization overrides, plus
-- serial (Wechatpay-Serial), headers (more "Name: value" lines),
-- omit (a set of lower-case header names to leave out), auth (a raw
-- Authorization value) and http (another client).
local function request(env, method, target, body, o)
    o = o or {}
    local omit = o.omit or {}
    local headers = {}
    local function add(name, line)
        if not omit[name] then
            headers[#headers + 1] = line
        end
    end
    add("accept", ACCEPT)
    add("user-agent", USER_AGENT)
    if body then
        add("content-type", JSON_TYPE)
    end
    add("authorization", "Authorization: " .. (o.auth or authorization(env, method, target,
        body, o)))
    if o.serial then
        headers[#headers + 1] = "Wechatpay-Serial: " .. o.serial
    end
    for _, line in ipairs(o.headers or {}) do
        headers[#headers + 1] = line
    end
    -- libcurl sends "Accept: */*" (and the client's User-Agent, when it has
    -- one) unless an empty header ("Name:") removes them.
    if omit["accept"] then
        headers[#headers + 1] = "Accept:"
    end
    if omit["user-agent"] then
        headers[#headers + 1] = "User-Agent:"
    end
    local res, code, message = (o.http or env.http):request(method,
        env.config.base_url .. target, headers, body)
    return res, code, message
end

local function decode(res)
    return assert(core.json_decode(res.body))
end

-- Verifies a response signature with public_key.  Returns true or
-- false and the reason.
local function verify(res, public_key)
    local h = res.headers
    if not (h["wechatpay-timestamp"] and h["wechatpay-nonce"] and h["wechatpay-signature"]) then
        return false, "signature headers missing"
    end
    local message = core.response_message(h["wechatpay-timestamp"], h["wechatpay-nonce"],
        res.body)
    return public_key:verify(message, h["wechatpay-signature"])
end

-- Percent-encodes every byte outside the unreserved set.
local function percent_encode(s)
    return (s:gsub("[^%w%-._~]", function(ch)
        return string.format("%%%02X", ch:byte())
    end))
end

-- Sends a control request without the helper's status assertion.
local function control(env, method, path, body)
    local payload = body and assert(core.json_encode(body)) or nil
    local res = assert(env.http:request(method, env.config.base_url .. path,
        { JSON_TYPE, ACCEPT }, payload))
    return res, res.body ~= "" and core.json_decode(res.body) or nil
end

-- Decrypts the platform certificates from /v3/certificates.
local function platform_certificates(env)
    local res = assert(request(env, "GET", "/v3/certificates"))
    assert(res.status == 200, res.body)
    local aead = assert(core.new_aead_key(env.config.apiv3_key))
    return assert(aead:parse_certificates(res.body)), res
end

local function guide_body(encrypt_key, fields)
    local body = {
        corpid = "wwd8f1c7a0e5b3c2d1",
        store_id = 1234,
        userid = "robert",
        name = encrypt_key:encrypt("张三"),
        mobile = encrypt_key:encrypt("13800138000"),
        qr_code = "https://example.invalid/qr/robert",
        avatar = "https://example.invalid/avatar/robert.png",
    }
    for key, value in pairs(fields or {}) do
        body[key] = value
    end
    return assert(core.json_encode(body))
end

-- Runs fns as coroutines of one cqueues loop and waits for all.
local function run_concurrently(...)
    local cq = cqueues.new()
    for _, fn in ipairs({ ... }) do
        cq:wrap(fn)
    end
    assert(cq:loop(10))
end

-- Sends raw bytes to the sandbox and returns everything it sends back
-- until it closes the connection (or timeout seconds pass).
local function raw_exchange(port, data, timeout)
    local received
    run_concurrently(function()
        local con = assert(socket.connect("127.0.0.1", port))
        con:onerror(function(_, _, why)
            return why
        end)
        con:setmode("b", "bn")
        con:xwrite(data, "bn", 5)
        local parts = {}
        while true do
            local chunk = con:xread(-65536, "b", timeout or 5)
            if not chunk then
                break
            end
            parts[#parts + 1] = chunk
        end
        con:close()
        received = table.concat(parts)
    end)
    return received
end

-- Returns true while the process runs; a zombie waiting for its parent
-- to reap it counts as gone.
local function pid_alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if not f then
        return false
    end
    local stat = f:read("a")
    f:close()
    return stat:match("^%d+ %b() (%a)") ~= "Z"
end

local function wait_until(predicate, seconds)
    local deadline = os.time() + seconds
    while os.time() <= deadline do
        if predicate() then
            return true
        end
        helper.sleep(0.1)
    end
    return predicate()
end

-- Starts spec/support/callback_receiver.lua on 127.0.0.1.  o: status
-- (of every response, default 200) and delay (seconds before each
-- response).  Returns a handle with port, url(path), count() (the
-- requests recorded so far), request(n) (the nth, decoded) and stop().
local function start_receiver(o)
    o = o or {}
    local dir = helper.tmpdir()
    local own_pid = helper.read("/proc/self/stat"):match("^(%d+)")
    local command = string.format("lua5.4 spec/support/callback_receiver.lua --dir %s"
        .. " --status %d --delay %s --parent-pid %s > %s 2>&1 & echo $!",
        helper.shell_quote(dir), o.status or 200, tostring(o.delay or 0), own_pid,
        helper.shell_quote(dir .. "/receiver.log"))
    local pid = helper.run(command):match("%d+")
    local started = wait_until(function()
        return helper.exists(dir .. "/port")
    end, 5)
    if not started then
        os.execute("kill " .. pid .. " 2>/dev/null")
        error("callback receiver did not start: " .. helper.read(dir .. "/receiver.log"))
    end
    local receiver = { port = tonumber(helper.read(dir .. "/port")), pid = pid }

    function receiver.url(path)
        return "http://127.0.0.1:" .. receiver.port .. (path or "/notify")
    end

    function receiver.count()
        local n = 0
        while helper.exists(dir .. "/request-" .. (n + 1) .. ".json") do
            n = n + 1
        end
        return n
    end

    function receiver.request(n)
        return assert(core.json_decode(helper.read(dir .. "/request-" .. n .. ".json")))
    end

    function receiver.stop()
        os.execute("kill " .. pid .. " 2>/dev/null")
    end

    return receiver
end

-- Returns a TCP port on 127.0.0.1 that nothing listens on.
local function closed_port()
    local listener = socket.listen({ host = "127.0.0.1", port = 0 })
    assert(listener:listen())
    local _, _, port = listener:localname()
    listener:close()
    return port
end

-- Verifies a callback's signature over the raw body with public_key.
local function verify_callback(headers, body, public_key)
    local message = core.response_message(headers["wechatpay-timestamp"],
        headers["wechatpay-nonce"], body)
    return public_key:verify(message, headers["wechatpay-signature"])
end

-- Checks a callback as the client checks responses, with the core's key
-- store holding public_key under serial.  Returns true, or nil, the
-- failure code ("missing", "stale", "probe", "serial", "signature", ...)
-- and the message.
local function client_verify(headers, body, serial, public_key)
    local store = core.new_store()
    store:put(serial, public_key, 0, nil, "config")
    return store:verify(headers["wechatpay-serial"], headers["wechatpay-timestamp"],
        headers["wechatpay-nonce"], headers["wechatpay-signature"], body, os.time())
end

-- Decrypts the resource of a callback body with the APIv3 key.  Returns
-- the plaintext, or nil and a message.
local function decrypt_resource(env, body)
    local resource = assert(core.json_decode(body)).resource
    local aead = assert(core.new_aead_key(env.config.apiv3_key))
    local associated_data = resource.associated_data
    if associated_data == core.null then
        associated_data = nil
    end
    return aead:decrypt(resource.nonce, associated_data, resource.ciphertext)
end

-- }====================================================================

describe("wechatpay sandbox", function()
    local shared_receiver

    -- Returns the receiver that responds 200, started on first use.
    local function receiver()
        shared_receiver = shared_receiver or start_receiver()
        return shared_receiver
    end

    teardown(function()
        if shared_receiver then
            shared_receiver.stop()
        end
        helper.cleanup()
    end)

    -- Sends POST /sandbox/notify with fields, adding the shared receiver's
    -- URL and a resource unless fields has them.  Returns the HTTP
    -- response and the decoded result.
    local function send_callback(env, fields)
        local body = { url = receiver().url(), resource = { out_trade_no = "T1" } }
        for key, value in pairs(fields or {}) do
            body[key] = value
        end
        return control(env, "POST", "/sandbox/notify", body)
    end

    -- Returns the public key of the published platform certificate that
    -- serial names, as /v3/certificates delivers it.
    local function certificate_key(env, serial)
        for _, certificate in ipairs(platform_certificates(env)) do
            if certificate:serial() == serial then
                return certificate:public_key()
            end
        end
        error("/v3/certificates does not list " .. serial)
    end

    describe("in certificate mode", function()
        local env
        local platform_key

        setup(function()
            env = open(helper.start_sandbox({ mode = "certificate" }))
            local certificates = platform_certificates(env)
            platform_key = certificates[1]:public_key()
        end)

        teardown(function()
            env.sandbox.stop()
        end)

        before_each(function()
            env.sandbox.control("POST", "/sandbox/reset")
        end)

        local function register(fields, o)
            o = o or {}
            o.serial = o.serial or env.config.platform_serial
            return request(env, "POST", "/v3/smartguide/guides",
                guide_body(o.encrypt_key or platform_key, fields), o)
        end

        describe("configuration", function()
            it("sandbox.json describes the sandbox", function()
                local c = env.config
                assert.matches("^http://127%.0%.0%.1:%d+$", c.base_url)
                assert.equal("1900000109", c.mchid)
                assert.equal("certificate", c.mode)
                assert.matches("^%x+$", c.serial_no)
                assert.matches("^[%u%d]+$", c.platform_serial)
                assert.equal(40, #c.platform_serial)
                assert.matches("^PUB_KEY_ID_%d+$", c.public_key_id)
                assert.equal(11 + 28, #c.public_key_id)
                assert.matches("^[%w]+$", c.apiv3_key)
                assert.equal(32, #c.apiv3_key)
                assert.is_nil(c.ca_file)
            end)

            it("serial_no is the merchant certificate's", function()
                local certificate = assert(core.load_certificate(helper.read(
                    env.sandbox.dir .. "/merchant_test_cert.pem")))
                assert.equal(env.config.serial_no, certificate:serial())
                assert.is_true(env.merchant_key:matches(certificate:public_key()))
            end)

            it("private key file has mode 0600", function()
                local out = helper.run("stat -c %a " .. helper.shell_quote(
                    env.config.private_key_file))
                assert.equal("600", out:gsub("%s+$", ""))
            end)

            it("prints the listening line", function()
                local log = env.sandbox.log()
                local expected = "sandbox: listening on " .. env.config.base_url
                    .. ", configuration in " .. env.sandbox.dir .. "/sandbox.json"
                assert.truthy(log:find(expected, 1, true), log)
            end)
        end)

        describe("request checks", function()
            local function assert_error(res, status, code)
                assert.is_table(res)
                assert.equal(status, res.status, res.body)
                assert.equal(code, decode(res).code, res.body)
                assert.truthy(res.headers["request-id"])
                assert.is_true(verify(res, platform_key))
            end

            it("accepts a correctly signed request", function()
                local res = assert(request(env, "GET", "/v3/smartguide/guides?store_id=1234"))
                assert.equal(200, res.status, res.body)
                assert.equal(0, decode(res).total_count)
            end)

            it("accepts Authorization fields in any order", function()
                local res = assert(request(env, "GET", "/v3/smartguide/guides?store_id=1234",
                    nil, { reverse_fields = true }))
                assert.equal(200, res.status, res.body)
            end)

            it("rejects a missing Accept header", function()
                local res = request(env, "GET", "/v3/certificates", nil,
                    { omit = { accept = true } })
                assert_error(res, 400, "INVALID_REQUEST")
                assert.equal("Http头缺少Accept或User-Agent", decode(res).message)
            end)

            it("rejects a missing User-Agent header", function()
                local res = request(env, "GET", "/v3/certificates", nil,
                    { omit = { ["user-agent"] = true } })
                assert_error(res, 400, "INVALID_REQUEST")
            end)

            it("rejects a POST without JSON Content-Type", function()
                local res = request(env, "POST", "/v3/smartguide/guides", "{}",
                    { omit = { ["content-type"] = true },
                      headers = { "Content-Type: text/plain" } })
                assert_error(res, 400, "INVALID_REQUEST")
            end)

            it("rejects a missing Authorization header", function()
                local res = request(env, "GET", "/v3/certificates", nil,
                    { omit = { authorization = true } })
                assert_error(res, 401, "SIGN_ERROR")
            end)

            it("rejects a malformed Authorization header", function()
                local valid = authorization(env, "GET", "/v3/certificates")
                local cases = {
                    valid:gsub("^WECHATPAY2%-SHA256%-RSA2048", "Bearer"),
                    valid:gsub(",", ";"),
                    valid:gsub('nonce_str="[^"]*",', ""),
                    valid .. ',mchid="1900000109"',
                }
                for _, value in ipairs(cases) do
                    local res = request(env, "GET", "/v3/certificates", nil, { auth = value })
                    assert_error(res, 401, "SIGN_ERROR")
                end
            end)

            it("rejects an unknown mchid", function()
                local res = request(env, "GET", "/v3/certificates", nil, { mchid = "1230000109" })
                assert_error(res, 400, "MCH_NOT_EXISTS")
            end)

            it("rejects a serial_no that is not the merchant's", function()
                local res = request(env, "GET", "/v3/certificates", nil,
                    { serial_no = env.config.platform_serial })
                assert_error(res, 401, "SIGN_ERROR")
            end)

            it("rejects timestamps outside five minutes", function()
                for _, offset in ipairs({ -301, 301 }) do
                    local res = request(env, "GET", "/v3/certificates", nil,
                        { timestamp = os.time() + offset })
                    assert_error(res, 401, "SIGN_ERROR")
                end
                local res = request(env, "GET", "/v3/certificates", nil,
                    { timestamp = os.time() - 200 })
                assert.equal(200, res.status, res.body)
            end)

            it("rejects a replayed nonce", function()
                local nonce = core.nonce()
                local first = request(env, "GET", "/v3/certificates", nil, { nonce = nonce })
                assert.equal(200, first.status, first.body)
                local second = request(env, "GET", "/v3/certificates", nil, { nonce = nonce })
                assert_error(second, 401, "SIGN_ERROR")
                assert.truthy(decode(second).message:find(nonce, 1, true))
            end)

            it("rejects a signature over other bytes", function()
                local target = "/v3/smartguide/guides?store_id=1234"
                local cases = {
                    { sign_target = "/v3/smartguide/guides?store_id=1235" },
                    { sign_target = "/v3/smartguide/guides" },
                    { signature = env.merchant_key:sign("something else") },
                    { signature = "WECHATPAY/SIGNTEST/abc" },
                }
                for _, o in ipairs(cases) do
                    local res = request(env, "GET", target, nil, o)
                    assert_error(res, 401, "SIGN_ERROR")
                end
                local res = request(env, "POST", "/v3/smartguide/guides", '{"a":1}',
                    { sign_body = '{"a":2}' })
                assert_error(res, 401, "SIGN_ERROR")
            end)

            it("verifies over the raw request target", function()
                local raw = "/v3/smartguide/guides?store_id=1234&userid=%E5%BC%A0"
                local res = request(env, "GET", raw)
                assert.equal(200, res.status, res.body)
                local decoded = "/v3/smartguide/guides?store_id=1234&userid=张"
                res = request(env, "GET", raw, nil, { sign_target = decoded })
                assert_error(res, 401, "SIGN_ERROR")
            end)

            it("returns 404 for unknown paths", function()
                local res = request(env, "GET", "/v3/smartguide/unknown")
                assert_error(res, 404, "NOT_FOUND")
            end)

            it("returns 405 for a wrong method", function()
                local res = request(env, "DELETE", "/v3/smartguide/guides")
                assert_error(res, 405, "METHOD_NOT_ALLOWED")
                assert.truthy(res.headers["allow"]:find("POST", 1, true))
            end)
        end)

        describe("smartguide", function()
            it("registers, queries, updates and assigns", function()
                local res = register()
                assert.equal(200, res.status, res.body)
                assert.is_true(verify(res, platform_key))
                local guide_id = decode(res).guide_id
                assert.matches("^LLA[%w]+$", guide_id)
                assert.equal(34, #guide_id)

                res = request(env, "GET", "/v3/smartguide/guides?store_id=1234")
                assert.equal(200, res.status, res.body)
                local page = decode(res)
                assert.equal(1, page.total_count)
                assert.equal(10, page.limit)
                assert.equal(0, page.offset)
                local entry = page.data[1]
                assert.equal(guide_id, entry.guide_id)
                assert.equal(1234, entry.store_id)
                assert.equal("robert", entry.userid)
                assert.equal("张三", env.merchant_key:decrypt(entry.name))
                assert.equal("13800138000", env.merchant_key:decrypt(entry.mobile))

                local update = assert(core.json_encode({
                    name = platform_key:encrypt("李四"),
                    mobile = platform_key:encrypt("13900139000"),
                    avatar = "https://example.invalid/avatar/new.png",
                }))
                res = request(env, "PATCH", "/v3/smartguide/guides/" .. guide_id, update,
                    { serial = env.config.platform_serial })
                assert.equal(204, res.status, res.body)
                assert.equal("", res.body)
                assert.is_true(verify(res, platform_key))

                res = request(env, "POST", "/v3/smartguide/guides/" .. guide_id .. "/assign",
                    '{"out_trade_no":"20260101-ab_c|d*1"}')
                assert.equal(204, res.status, res.body)
                assert.is_true(verify(res, platform_key))

                local guides = env.sandbox.control("GET", "/sandbox/guides")
                assert.equal(1, #guides)
                assert.equal("李四", guides[1].name)
                assert.equal("13900139000", guides[1].mobile)
                assert.equal("https://example.invalid/avatar/new.png", guides[1].avatar)
                local assignments = env.sandbox.control("GET", "/sandbox/assignments")
                assert.same({ { guide_id = guide_id, out_trade_no = "20260101-ab_c|d*1" } },
                    assignments)
            end)

            it("queries by userid, mobile and page", function()
                for i = 1, 3 do
                    local res = register({ userid = "user" .. i,
                        mobile = platform_key:encrypt("1380000000" .. i) })
                    assert.equal(200, res.status, res.body)
                end
                local res = request(env, "GET", "/v3/smartguide/guides?store_id=1234&userid=user2")
                local page = decode(res)
                assert.equal(1, page.total_count)
                assert.equal("user2", page.data[1].userid)

                local mobile = platform_key:encrypt("13800000003")
                res = request(env, "GET", "/v3/smartguide/guides?store_id=1234&mobile="
                    .. percent_encode(mobile), nil, { serial = env.config.platform_serial })
                assert.equal(200, res.status, res.body)
                page = decode(res)
                assert.equal(1, page.total_count)
                assert.equal("user3", page.data[1].userid)

                res = request(env, "GET", "/v3/smartguide/guides?store_id=1234&limit=2&offset=2")
                page = decode(res)
                assert.equal(3, page.total_count)
                assert.equal(1, #page.data)
                assert.equal("user3", page.data[1].userid)
            end)

            it("keeps a literal + in the query", function()
                local mobile
                repeat
                    mobile = platform_key:encrypt("13800138000")
                until mobile:find("+", 1, true)
                assert.equal(200, register().status)
                local target = "/v3/smartguide/guides?store_id=1234&mobile=" .. mobile
                local res = request(env, "GET", target, nil,
                    { serial = env.config.platform_serial })
                assert.equal(200, res.status, res.body)
                assert.equal(1, decode(res).total_count)
            end)

            it("requires store_id as a JSON integer", function()
                local res = register({ store_id = "1234" })
                assert.equal(400, res.status, res.body)
                local err = decode(res)
                assert.equal("PARAM_ERROR", err.code)
                assert.truthy(err.message:find("64 位无符号整数", 1, true), err.message)
            end)

            it("names a missing field in detail", function()
                local res = register({ corpid = core.null })
                assert.equal(400, res.status, res.body)
                local err = decode(res)
                assert.equal("PARAM_ERROR", err.code)
                assert.same({ field = "/corpid", location = "body" }, err.detail)
            end)

            it("rejects an unknown store", function()
                local res = register({ store_id = 999 })
                assert.equal(400, res.status, res.body)
                assert.equal("门店id不存在", decode(res).message)
            end)

            it("rejects a duplicate userid", function()
                assert.equal(200, register().status)
                local res = register()
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)
            end)

            it("requires a known Wechatpay-Serial", function()
                local res = request(env, "POST", "/v3/smartguide/guides", guide_body(platform_key))
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)
                res = register(nil, { serial = env.config.public_key_id })
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)
            end)

            it("rejects fields encrypted with another key", function()
                local res = register(nil, { encrypt_key = env.public_key })
                assert.equal(400, res.status, res.body)
                local err = decode(res)
                assert.equal("PARAM_ERROR", err.code)
                assert.equal("平台私钥解密失败", err.message)
            end)

            it("checks the decrypted text", function()
                local cases = {
                    { name = platform_key:encrypt("张三😀") },
                    { name = platform_key:encrypt(string.rep("名", 22)) },
                    { mobile = platform_key:encrypt(string.rep("1", 33)) },
                    { name = platform_key:encrypt("\xff\xfe") },
                }
                for _, fields in ipairs(cases) do
                    local res = register(fields)
                    assert.equal(400, res.status, res.body)
                    assert.equal("PARAM_ERROR", decode(res).code)
                end
                assert.equal(200, register({ name = platform_key:encrypt(string.rep("名", 21)) })
                    .status)
            end)

            it("checks assign requests", function()
                local guide_id = decode(register()).guide_id
                local target = "/v3/smartguide/guides/" .. guide_id .. "/assign"
                local res = request(env, "POST", target, assert(core.json_encode({
                    out_trade_no = "T1", guide_id = guide_id })))
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)

                for _, bad in ipairs({ "", string.rep("1", 33), "T 1", "订单" }) do
                    res = request(env, "POST", target,
                        assert(core.json_encode({ out_trade_no = bad })))
                    assert.equal(400, res.status, res.body)
                end

                res = request(env, "POST", "/v3/smartguide/guides/LLAnosuchguide/assign",
                    '{"out_trade_no":"T1"}')
                assert.equal(404, res.status, res.body)
                assert.equal("RESOURCE_NOT_EXISTS", decode(res).code)
                assert.same({}, env.sandbox.control("GET", "/sandbox/assignments"))
            end)

            it("checks query parameters", function()
                local cases = {
                    "/v3/smartguide/guides",
                    "/v3/smartguide/guides?store_id=abc",
                    "/v3/smartguide/guides?store_id=1234&limit=11",
                    "/v3/smartguide/guides?store_id=1234&limit=0",
                    "/v3/smartguide/guides?store_id=1234&offset=-1",
                    "/v3/smartguide/guides?store_id=1234&userid=%ZZ",
                }
                for _, target in ipairs(cases) do
                    local res = request(env, "GET", target)
                    assert.equal(400, res.status, target .. " " .. res.body)
                    assert.equal("PARAM_ERROR", decode(res).code)
                end
            end)

            it("rejects an offset it cannot add to", function()
                assert.equal(200, register().status)
                for _, offset in ipairs({ math.maxinteger, math.maxinteger - 9 }) do
                    local res = request(env, "GET",
                        "/v3/smartguide/guides?store_id=1234&offset=" .. offset)
                    assert.equal(400, res.status, offset .. " " .. res.body)
                    assert.equal("PARAM_ERROR", decode(res).code)
                end
                local res = request(env, "GET", "/v3/smartguide/guides?store_id=1234&offset="
                    .. (math.maxinteger - 10))
                assert.equal(200, res.status, res.body)
                local page = decode(res)
                assert.equal(1, page.total_count)
                assert.equal(0, #page.data)
            end)

            it("updates only existing guides", function()
                local res = request(env, "PATCH", "/v3/smartguide/guides/LLAnosuchguide",
                    '{"avatar":"https://example.invalid/a.png"}')
                assert.equal(404, res.status, res.body)
                assert.equal("RESOURCE_NOT_EXISTS", decode(res).code)
            end)

            it("requires Wechatpay-Serial to update name", function()
                local guide_id = decode(register()).guide_id
                local body = assert(core.json_encode({ name = platform_key:encrypt("王五") }))
                local res = request(env, "PATCH", "/v3/smartguide/guides/" .. guide_id, body)
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)
            end)
        end)

        describe("/v3/certificates", function()
            it("decrypts to the platform certificate", function()
                local res = assert(request(env, "GET", "/v3/certificates"))
                assert.equal(200, res.status, res.body)
                local entry = decode(res).data[1]
                assert.equal(env.config.platform_serial, entry.serial_no)
                assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00$",
                    entry.effective_time)
                assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00$", entry.expire_time)
                local encrypted = entry.encrypt_certificate
                assert.equal("AEAD_AES_256_GCM", encrypted.algorithm)
                assert.equal("certificate", encrypted.associated_data)
                assert.equal(12, #encrypted.nonce)
                local aead = assert(core.new_aead_key(env.config.apiv3_key))
                local pem = assert(aead:decrypt(encrypted.nonce, encrypted.associated_data,
                    encrypted.ciphertext))
                local certificate = assert(core.load_certificate(pem))
                assert.equal(entry.serial_no, certificate:serial())
                assert.equal(entry.serial_no, res.headers["wechatpay-serial"])
                assert.is_true(verify(res, certificate:public_key()))
            end)
        end)

        describe("responses", function()
            it("carry every signature header", function()
                local res = assert(request(env, "GET", "/v3/smartguide/guides?store_id=1234"))
                local h = res.headers
                assert.equal("application/json", h["content-type"])
                assert.truthy(h["request-id"])
                assert.matches("^%d+$", h["wechatpay-timestamp"])
                assert.truthy(h["wechatpay-nonce"])
                assert.equal(env.config.platform_serial, h["wechatpay-serial"])
                assert.equal("WECHATPAY2-SHA256-RSA2048", h["wechatpay-signature-type"])
                assert.is_true(verify(res, platform_key))
                assert.is_false(verify(res, env.public_key))
            end)
        end)

        describe("faults", function()
            local target = "/v3/smartguide/guides?store_id=1234"

            local function arm(spec)
                return env.sandbox.control("POST", "/sandbox/faults", spec)
            end

            it("status sends a signed error", function()
                arm({ fault = "status", status = 503, retry_after = 7, count = 2 })
                for _ = 1, 2 do
                    local res = assert(request(env, "GET", target))
                    assert.equal(503, res.status)
                    assert.equal("SERVICE_UNAVAILABLE", decode(res).code)
                    assert.equal("7", res.headers["retry-after"])
                    assert.is_true(verify(res, platform_key))
                end
                assert.equal(200, request(env, "GET", target).status)
            end)

            it("status does not process the request", function()
                arm({ fault = "status", status = 500, message = "系统繁忙,请稍后重试" })
                local res = register()
                assert.equal(500, res.status)
                assert.equal("SYSTEM_ERROR", decode(res).code)
                assert.equal("系统繁忙,请稍后重试", decode(res).message)
                assert.same({}, env.sandbox.control("GET", "/sandbox/guides"))
            end)

            it("bad_signature signs other bytes", function()
                arm({ fault = "bad_signature" })
                local res = assert(request(env, "GET", target))
                assert.equal(200, res.status)
                local ok, why = verify(res, platform_key)
                assert.is_false(ok)
                assert.is_nil(why:find("SIGNTEST", 1, true))
                assert.matches("^[%w+/]+=*$", res.headers["wechatpay-signature"])
            end)

            it("signtest sends a probe signature", function()
                arm({ fault = "signtest" })
                local res = assert(request(env, "GET", target))
                assert.matches("^WECHATPAY/SIGNTEST/.+", res.headers["wechatpay-signature"])
                assert.is_false(verify(res, platform_key))
            end)

            it("missing_header omits one header", function()
                arm({ fault = "missing_header", header = "Wechatpay-Nonce" })
                local res = assert(request(env, "GET", target))
                assert.is_nil(res.headers["wechatpay-nonce"])
                assert.truthy(res.headers["wechatpay-signature"])
                assert.truthy(res.headers["wechatpay-timestamp"])
                assert.truthy(res.headers["wechatpay-serial"])
            end)

            it("stale_timestamp signs an old timestamp", function()
                arm({ fault = "stale_timestamp", skew = -600 })
                local res = assert(request(env, "GET", target))
                local skew = tonumber(res.headers["wechatpay-timestamp"]) - os.time()
                assert.is_true(skew <= -598 and skew >= -602, tostring(skew))
                assert.is_true(verify(res, platform_key))
            end)

            it("unknown_serial names another serial", function()
                arm({ fault = "unknown_serial" })
                local res = assert(request(env, "GET", target))
                assert.are_not.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
                assert.equal(40, #res.headers["wechatpay-serial"])
                assert.is_true(verify(res, platform_key))
            end)

            it("wrong_key signs with another key", function()
                arm({ fault = "wrong_key" })
                local res = assert(request(env, "GET", target))
                assert.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
                assert.is_false(verify(res, platform_key))
            end)

            it("delay keeps serving others", function()
                arm({ fault = "delay", seconds = 1, path = "/v3/certificates" })
                local auth = authorization(env, "GET", "/v3/certificates")
                local order = {}
                run_concurrently(function()
                    local answer = raw_exchange(env.port, "GET /v3/certificates HTTP/1.1\r\n"
                        .. "Host: localhost\r\nAccept: application/json\r\n" .. USER_AGENT
                        .. "\r\nAuthorization: " .. auth .. "\r\nConnection: close\r\n\r\n")
                    assert.matches("^HTTP/1%.1 200", answer)
                    order[#order + 1] = "delayed"
                end, function()
                    cqueues.sleep(0.2)
                    local answer = raw_exchange(env.port, "GET /sandbox/health HTTP/1.1\r\n"
                        .. "Host: localhost\r\nConnection: close\r\n\r\n")
                    assert.matches("^HTTP/1%.1 200", answer)
                    order[#order + 1] = "health"
                end)
                assert.same({ "health", "delayed" }, order)
            end)

            it("hang never responds", function()
                arm({ fault = "hang" })
                local http = assert(core.new_http({ timeout = 1 }))
                local res, code = request(env, "GET", target, nil, { http = http })
                assert.is_nil(res)
                assert.equal("timeout", code)
                assert.is_table(env.sandbox.control("GET", "/sandbox/health"))
            end)

            it("reset closes without a response", function()
                arm({ fault = "reset" })
                -- A fresh client: on a reused connection libcurl retries
                -- once when the server closes without a response.
                local http = assert(core.new_http({ timeout = 5 }))
                local res, code = request(env, "GET", target, nil, { http = http })
                assert.is_nil(res)
                assert.equal("reset", code)
            end)

            it("reset_before_request closes unread", function()
                arm({ fault = "reset_before_request" })
                local http = assert(core.new_http({ timeout = 5 }))
                local res, code = request(env, "GET", target, nil, { http = http })
                assert.is_nil(res)
                assert.equal("reset", code)
                assert.same({}, env.sandbox.control("GET", "/sandbox/faults"))
                assert.equal(200, request(env, "GET", target, nil, { http = http }).status)
            end)

            it("reset_before_request closes before any byte", function()
                arm({ fault = "reset_before_request", count = 2 })
                for _ = 1, 2 do
                    local started = cqueues.monotime()
                    -- Without the fault the server would wait for a request.
                    assert.equal("", raw_exchange(env.port, "", 3))
                    assert.is_true(cqueues.monotime() - started < 2)
                end
                local answer = raw_exchange(env.port, "GET /sandbox/health HTTP/1.1\r\n"
                    .. "Host: localhost\r\nConnection: close\r\n\r\n")
                assert.matches("^HTTP/1%.1 200", answer)
            end)

            it("reset_before_request takes no path or method", function()
                for _, spec in ipairs({
                    { fault = "reset_before_request", path = "/v3/certificates" },
                    { fault = "reset_before_request", method = "GET" },
                }) do
                    local res = control(env, "POST", "/sandbox/faults", spec)
                    assert.equal(400, res.status, res.body)
                end
                assert.same({}, env.sandbox.control("GET", "/sandbox/faults"))
            end)

            it("status 429 sends Retry-After only when set", function()
                arm({ fault = "status", status = 429, retry_after = 3 })
                local res = assert(request(env, "GET", target))
                assert.equal(429, res.status)
                assert.equal("RATELIMIT_EXCEEDED", decode(res).code)
                assert.equal("3", res.headers["retry-after"])
                assert.is_true(verify(res, platform_key))

                arm({ fault = "status", status = 429 })
                res = assert(request(env, "GET", target))
                assert.equal(429, res.status)
                assert.equal("RATELIMIT_EXCEEDED", decode(res).code)
                assert.is_nil(res.headers["retry-after"])
                assert.is_true(verify(res, platform_key))
            end)

            it("status fails the certificate download", function()
                arm({ fault = "status", status = 503, path = "/v3/certificates" })
                assert.equal(200, request(env, "GET", target).status)
                local res = assert(request(env, "GET", "/v3/certificates"))
                assert.equal(503, res.status)
                assert.equal("SERVICE_UNAVAILABLE", decode(res).code)
                assert.is_nil(decode(res).data)
                assert.is_true(verify(res, platform_key))
                assert.equal(200, request(env, "GET", "/v3/certificates").status)
            end)

            it("truncate sends less than Content-Length", function()
                arm({ fault = "truncate" })
                local res, code = request(env, "GET", target)
                assert.is_nil(res)
                assert.equal("truncated", code)
            end)

            it("oversize sends a signed body of that size", function()
                arm({ fault = "oversize", bytes = 4096 })
                local res = assert(request(env, "GET", target))
                assert.equal(200, res.status)
                assert.equal(4096, #res.body)
                assert.is_table(decode(res))
                assert.is_true(verify(res, platform_key))

                arm({ fault = "oversize", bytes = 2 * 1024 * 1024 })
                local small = assert(core.new_http({ timeout = 5,
                    max_response_size = 1024 * 1024 }))
                local missing, code = request(env, "GET", target, nil, { http = small })
                assert.is_nil(missing)
                assert.equal("too_large", code)
            end)

            it("invalid_json sends a signed non-JSON body", function()
                arm({ fault = "invalid_json" })
                local res = assert(request(env, "GET", target))
                assert.equal(200, res.status)
                assert.is_nil(core.json_decode(res.body))
                assert.is_true(verify(res, platform_key))
            end)

            it("empty_body sends a signed empty 200", function()
                arm({ fault = "empty_body" })
                local res = assert(request(env, "GET", target))
                assert.equal(200, res.status)
                assert.equal("", res.body)
                assert.is_nil(res.headers["content-type"])
                assert.is_true(verify(res, platform_key))
            end)

            it("matches method and path", function()
                arm({ fault = "status", status = 500, method = "POST", path = "/v3/smartguide" })
                assert.equal(200, request(env, "GET", target).status)
                assert.equal(200, request(env, "GET", "/v3/certificates").status)
                assert.equal(500, register().status)
                assert.equal(200, register().status)

                arm({ fault = "status", status = 429,
                    path = "^/v3/smartguide/guides/[^/]+/assign$" })
                assert.equal(200, request(env, "GET", target).status)
                local res = request(env, "POST", "/v3/smartguide/guides/LLAx/assign",
                    '{"out_trade_no":"T1"}')
                assert.equal(429, res.status)
                assert.equal("RATELIMIT_EXCEEDED", decode(res).code)
            end)

            it("rejects invalid fault specs", function()
                local specs = {
                    { fault = "no_such_fault" },
                    { fault = "status", status = 200 },
                    { fault = "delay", seconds = -1 },
                    { fault = "missing_header", header = "Request-ID" },
                    { fault = "status", count = 0 },
                    { fault = "status", path = "[" },
                }
                for _, spec in ipairs(specs) do
                    local res = control(env, "POST", "/sandbox/faults", spec)
                    assert.equal(400, res.status, res.body)
                end
                assert.same({}, env.sandbox.control("GET", "/sandbox/faults"))
            end)

            it("DELETE clears armed faults", function()
                arm({ fault = "status", count = 5 })
                assert.equal(1, #env.sandbox.control("GET", "/sandbox/faults"))
                env.sandbox.control("DELETE", "/sandbox/faults")
                assert.equal(200, request(env, "GET", target).status)
            end)
        end)

        describe("control API", function()
            it("health returns ok", function()
                assert.same({ ok = true }, env.sandbox.control("GET", "/sandbox/health"))
            end)

            it("stores adds a store", function()
                assert.equal(400, register({ store_id = 5678 }).status)
                env.sandbox.control("POST", "/sandbox/stores", { store_id = 5678 })
                assert.equal(200, register({ store_id = 5678 }).status)
                assert.same({ 1234, 5678 }, env.sandbox.control("GET", "/sandbox/stores"))
            end)

            it("guides adds a guide with work_id", function()
                local added = env.sandbox.control("POST", "/sandbox/guides", {
                    store_id = 1234, name = "赵六", mobile = "13700137000", work_id = "W001" })
                local res = request(env, "GET", "/v3/smartguide/guides?store_id=1234&work_id=W001")
                local page = decode(res)
                assert.equal(1, page.total_count)
                assert.equal(added.guide_id, page.data[1].guide_id)
                assert.equal("W001", page.data[1].work_id)
                assert.equal("赵六", env.merchant_key:decrypt(page.data[1].name))
            end)

            it("requests logs without the signature", function()
                local res = register()
                assert.equal(200, res.status)
                local log = env.sandbox.control("GET", "/sandbox/requests")
                local entry = log[#log]
                assert.equal("POST", entry.method)
                assert.equal("/v3/smartguide/guides", entry.target)
                assert.equal(200, entry.status)
                assert.is_nil(entry.headers.authorization)
                assert.equal(env.config.platform_serial, entry.headers["wechatpay-serial"])
                assert.equal(env.config.mchid, entry.authorization.mchid)
                assert.equal(env.config.serial_no, entry.authorization.serial_no)
                assert.is_nil(entry.authorization.signature)
                assert.truthy(entry.body:find('"corpid"', 1, true))
                local text = assert(core.json_encode(log))
                assert.is_nil(text:find("signature=", 1, true))
            end)

            it("requests keeps the last 100", function()
                for _ = 1, 105 do
                    request(env, "GET", "/v3/smartguide/guides?store_id=1234")
                end
                local log = env.sandbox.control("GET", "/sandbox/requests")
                assert.equal(100, #log)
            end)

            it("clock shifts the sandbox clock", function()
                local clock = env.sandbox.control("POST", "/sandbox/clock", { skew = 3600 })
                assert.equal(3600, clock.skew)
                local res = request(env, "GET", "/v3/certificates")
                assert.equal(401, res.status)
                local shifted = tonumber(res.headers["wechatpay-timestamp"]) - os.time()
                assert.is_true(shifted >= 3598 and shifted <= 3602, tostring(shifted))
                res = request(env, "GET", "/v3/certificates", nil,
                    { timestamp = os.time() + 3600 })
                assert.equal(200, res.status, res.body)
            end)

            it("reset clears everything", function()
                local guide_id = decode(register()).guide_id
                request(env, "POST", "/v3/smartguide/guides/" .. guide_id .. "/assign",
                    '{"out_trade_no":"T1"}')
                env.sandbox.control("POST", "/sandbox/stores", { store_id = 42 })
                env.sandbox.control("POST", "/sandbox/clock", { skew = 100 })
                env.sandbox.control("POST", "/sandbox/faults", { fault = "status", count = 3 })
                env.sandbox.control("POST", "/sandbox/reset")
                assert.same({}, env.sandbox.control("GET", "/sandbox/guides"))
                assert.same({}, env.sandbox.control("GET", "/sandbox/assignments"))
                assert.same({}, env.sandbox.control("GET", "/sandbox/requests"))
                assert.same({}, env.sandbox.control("GET", "/sandbox/faults"))
                assert.same({ 1234 }, env.sandbox.control("GET", "/sandbox/stores"))
                assert.equal(0, env.sandbox.control("GET", "/sandbox/clock").skew)
            end)

            it("rejects invalid control input", function()
                assert.equal(400, control(env, "POST", "/sandbox/clock", { skew = "x" }).status)
                assert.equal(400,
                    control(env, "POST", "/sandbox/stores", { store_id = -1 }).status)
                assert.equal(404, control(env, "GET", "/sandbox/nothing").status)
                assert.equal(405, control(env, "PUT", "/sandbox/reset").status)
            end)
        end)

        describe("certificate rotation", function()
            local target = "/v3/smartguide/guides?store_id=1234"

            local function publish(body)
                return env.sandbox.control("POST", "/sandbox/certificates", body or {})
            end

            it("lists the first certificate signing", function()
                local list = env.sandbox.control("GET", "/sandbox/certificates")
                assert.equal(1, #list)
                assert.equal(env.config.platform_serial, list[1].serial)
                assert.is_true(list[1].signing)
                local certificate = platform_certificates(env)[1]
                assert.equal(certificate:not_before(), list[1].not_before)
                assert.equal(certificate:not_after(), list[1].not_after)
            end)

            it("publishes a certificate not yet signing", function()
                local before = os.time()
                local added = publish()
                assert.matches("^[%dA-F]+$", added.serial)
                assert.equal(40, #added.serial)
                assert.are_not.equal(env.config.platform_serial, added.serial)
                assert.is_true(math.abs(added.not_before - (before - 60)) <= 2)
                assert.is_true(math.abs(added.not_after - (before + 5 * 365 * 86400)) <= 2)

                local list = env.sandbox.control("GET", "/sandbox/certificates")
                assert.equal(2, #list)
                assert.equal(env.config.platform_serial, list[1].serial)
                assert.is_true(list[1].signing)
                assert.equal(added.serial, list[2].serial)
                assert.is_false(list[2].signing)

                local certificates, res = platform_certificates(env)
                assert.equal(2, #certificates)
                assert.equal(env.config.platform_serial, certificates[1]:serial())
                assert.equal(added.serial, certificates[2]:serial())
                assert.equal(added.not_before, certificates[2]:not_before())
                assert.equal(added.not_after, certificates[2]:not_after())
                local entry = decode(res).data[2]
                assert.equal(added.serial, entry.serial_no)
                assert.equal("certificate", entry.encrypt_certificate.associated_data)
                assert.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
                assert.is_true(verify(res, platform_key))
            end)

            it("publishes with the given validity", function()
                local not_before = os.time() - 3600
                local not_after = os.time() + 7200
                local added = publish({ not_before = not_before, not_after = not_after })
                assert.equal(not_before, added.not_before)
                assert.equal(not_after, added.not_after)
                local certificate = platform_certificates(env)[2]
                assert.equal(not_before, certificate:not_before())
                assert.equal(not_after, certificate:not_after())
            end)

            it("rejects invalid validity periods", function()
                local now = os.time()
                local bodies = {
                    { not_before = now, not_after = now },
                    { not_before = now + 10, not_after = now },
                    { not_after = now - 3600 },
                    { not_before = "yesterday" },
                    { not_before = -1 },
                    { not_after = 253402300800 },
                    { not_after = now + 0.5 },
                }
                for _, body in ipairs(bodies) do
                    local res = control(env, "POST", "/sandbox/certificates", body)
                    assert.equal(400, res.status, res.body)
                    assert.equal("PARAM_ERROR", decode(res).code)
                end
                assert.equal(1, #env.sandbox.control("GET", "/sandbox/certificates"))
            end)

            it("decrypts fields under a published certificate", function()
                local added = publish()
                local key = certificate_key(env, added.serial)
                local res = register(nil, { encrypt_key = key, serial = added.serial })
                assert.equal(200, res.status, res.body)
                assert.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
                res = register({ userid = "alice" }, { encrypt_key = key })
                assert.equal(400, res.status, res.body)
                assert.equal("平台私钥解密失败", decode(res).message)
                assert.equal("张三", env.sandbox.control("GET", "/sandbox/guides")[1].name)
            end)

            it("sign switches the response signer", function()
                local added = publish()
                local new_key = certificate_key(env, added.serial)
                local signer = env.sandbox.control("POST", "/sandbox/certificates/sign",
                    { serial = added.serial })
                assert.equal(added.serial, signer.serial)
                assert.is_true(signer.signing)

                local res = assert(request(env, "GET", target))
                assert.equal(200, res.status, res.body)
                assert.equal(added.serial, res.headers["wechatpay-serial"])
                assert.is_true(verify(res, new_key))
                assert.is_false(verify(res, platform_key))
                res = register(nil, { serial = env.config.platform_serial })
                assert.equal(200, res.status, res.body)
                assert.equal(added.serial, res.headers["wechatpay-serial"])
                assert.is_true(verify(res, new_key))

                local list = env.sandbox.control("GET", "/sandbox/certificates")
                assert.is_false(list[1].signing)
                assert.is_true(list[2].signing)
            end)

            it("sign accepts a lower-case serial", function()
                local added = publish()
                env.sandbox.control("POST", "/sandbox/certificates/sign",
                    { serial = added.serial:lower() })
                local res = assert(request(env, "GET", target))
                assert.equal(added.serial, res.headers["wechatpay-serial"])
            end)

            it("sign rejects unknown serials", function()
                local res = control(env, "POST", "/sandbox/certificates/sign",
                    { serial = string.rep("A", 40) })
                assert.equal(404, res.status, res.body)
                res = control(env, "POST", "/sandbox/certificates/sign", {})
                assert.equal(400, res.status, res.body)
                assert.equal(env.config.platform_serial,
                    request(env, "GET", target).headers["wechatpay-serial"])
            end)

            it("withdraws a certificate", function()
                local added = publish()
                env.sandbox.control("POST", "/sandbox/certificates/sign",
                    { serial = added.serial })
                local withdrawn = env.sandbox.control("DELETE", "/sandbox/certificates/"
                    .. env.config.platform_serial)
                assert.equal(env.config.platform_serial, withdrawn.serial)

                local list = env.sandbox.control("GET", "/sandbox/certificates")
                assert.equal(1, #list)
                assert.equal(added.serial, list[1].serial)
                local certificates = platform_certificates(env)
                assert.equal(1, #certificates)
                assert.equal(added.serial, certificates[1]:serial())

                local res = register()
                assert.equal(400, res.status, res.body)
                local err = decode(res)
                assert.equal("PARAM_ERROR", err.code)
                assert.equal("Wechatpay-Serial", err.detail.field)
                assert.truthy(err.message:find(added.serial, 1, true), err.message)
                res = register(nil, { encrypt_key = certificate_key(env, added.serial),
                    serial = added.serial })
                assert.equal(200, res.status, res.body)
            end)

            it("rejects withdrawing the signer", function()
                publish()
                local res = control(env, "DELETE", "/sandbox/certificates/"
                    .. env.config.platform_serial)
                assert.equal(400, res.status, res.body)
                assert.equal("PARAM_ERROR", decode(res).code)
                assert.equal(2, #env.sandbox.control("GET", "/sandbox/certificates"))
                res = control(env, "DELETE", "/sandbox/certificates/" .. string.rep("B", 40))
                assert.equal(404, res.status, res.body)
                res = control(env, "PUT", "/sandbox/certificates/" .. env.config.platform_serial)
                assert.equal(405, res.status, res.body)
            end)

            it("reset restores the first certificate", function()
                local added = publish()
                env.sandbox.control("POST", "/sandbox/certificates/sign",
                    { serial = added.serial })
                env.sandbox.control("DELETE", "/sandbox/certificates/"
                    .. env.config.platform_serial)
                env.sandbox.control("POST", "/sandbox/reset")
                local list = env.sandbox.control("GET", "/sandbox/certificates")
                assert.equal(1, #list)
                assert.equal(env.config.platform_serial, list[1].serial)
                assert.is_true(list[1].signing)
                local res = assert(request(env, "GET", target))
                assert.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
                assert.is_true(verify(res, platform_key))
                assert.equal(1, #platform_certificates(env))
            end)
        end)

        describe("callbacks", function()
            local function last_request()
                local r = receiver()
                return r.request(r.count())
            end

            it("delivers a signed, encrypted callback", function()
                local before = receiver().count()
                local resource = { out_trade_no = "T1", transaction_id = "4200000001",
                    amount = { total = 100, currency = "CNY" } }
                local res, result = send_callback(env, { resource = resource,
                    associated_data = "transaction" })
                assert.equal(200, res.status, res.body)
                assert.equal(200, result.status)
                assert.equal('{"code":"SUCCESS","message":"成功"}', result.response_body)
                assert.is_nil(result.error)
                assert.equal(before + 1, receiver().count())

                local received = last_request()
                assert.equal("POST", received.method)
                assert.equal("/notify", received.target)
                assert.equal(result.sent.body, received.body)
                for name, value in pairs(result.sent.headers) do
                    assert.equal(value, received.headers[name:lower()], name)
                end
                local h = received.headers
                assert.equal("application/json", h["content-type"])
                assert.equal("WECHATPAY2-SHA256-RSA2048", h["wechatpay-signature-type"])
                assert.equal(env.config.platform_serial, h["wechatpay-serial"])
                assert.is_nil(h["request-id"])
                assert.is_true(math.abs(tonumber(h["wechatpay-timestamp"]) - os.time()) <= 2)
                assert.is_true(verify_callback(h, received.body, platform_key))
                assert.is_false(verify_callback(h, received.body .. " ", platform_key))
                assert.is_true(client_verify(h, received.body, env.config.platform_serial,
                    platform_key))

                local body = assert(core.json_decode(received.body))
                assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", body.id)
                assert.equal(36, #body.id)
                assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%+08:00$",
                    body.create_time)
                assert.equal("encrypt-resource", body.resource_type)
                assert.equal("TRANSACTION.SUCCESS", body.event_type)
                assert.equal("支付成功", body.summary)
                assert.equal("transaction", body.resource.original_type)
                assert.equal("AEAD_AES_256_GCM", body.resource.algorithm)
                assert.equal("transaction", body.resource.associated_data)
                assert.matches("^%w+$", body.resource.nonce)
                assert.equal(12, #body.resource.nonce)
                local plaintext = assert(decrypt_resource(env, received.body))
                assert.same(resource, core.json_decode(plaintext))
            end)

            it("sends the given event fields", function()
                local _, result = send_callback(env, { event_type = "REFUND.SUCCESS",
                    original_type = "refund", summary = "退款成功", resource = { refund_id = "R1" },
                    url = receiver().url("/refunds/notify?tenant=7") })
                assert.equal(200, result.status)
                local received = last_request()
                assert.equal("/refunds/notify?tenant=7", received.target)
                local body = assert(core.json_decode(received.body))
                assert.equal("REFUND.SUCCESS", body.event_type)
                assert.equal("退款成功", body.summary)
                assert.equal("refund", body.resource.original_type)
                assert.same({ refund_id = "R1" },
                    core.json_decode(assert(decrypt_resource(env, received.body))))
            end)

            it("sends each form of associated_data", function()
                local cases = {
                    { name = "string", value = "transaction",
                      raw = '"associated_data":"transaction"' },
                    { name = "empty", value = "", raw = '"associated_data":""' },
                    { name = "null", value = core.null, raw = '"associated_data":null' },
                    { name = "absent", value = nil, raw = nil },
                }
                local aead = assert(core.new_aead_key(env.config.apiv3_key))
                for _, case in ipairs(cases) do
                    local _, result = send_callback(env, { associated_data = case.value })
                    assert.equal(200, result.status, case.name)
                    local raw = last_request().body
                    if case.raw then
                        assert.truthy(raw:find(case.raw, 1, true), case.name .. ": " .. raw)
                    else
                        assert.is_nil(raw:find("associated_data", 1, true), raw)
                    end
                    local resource = core.json_decode(raw).resource
                    assert.equal(case.value, resource.associated_data, case.name)
                    local plaintext = decrypt_resource(env, raw)
                    assert.equal('{"out_trade_no":"T1"}', plaintext, case.name)
                    local other_aad = aead:decrypt(resource.nonce, "other", resource.ciphertext)
                    assert.is_nil(other_aad, case.name)
                end
            end)

            it("signtest sends a probe signature", function()
                local _, result = send_callback(env, { fault = "signtest" })
                assert.equal(200, result.status)
                local received = last_request()
                assert.matches("^WECHATPAY/SIGNTEST/.+", received.headers["wechatpay-signature"])
                local ok, code = client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key)
                assert.is_nil(ok)
                assert.equal("probe", code)
            end)

            it("bad_signature signs other bytes", function()
                send_callback(env, { fault = "bad_signature" })
                local received = last_request()
                assert.matches("^[%w+/]+=*$", received.headers["wechatpay-signature"])
                local ok, code = client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key)
                assert.is_nil(ok)
                assert.equal("signature", code)
                assert.truthy(decrypt_resource(env, received.body))
            end)

            it("stale_timestamp signs an old timestamp", function()
                send_callback(env, { fault = "stale_timestamp" })
                local received = last_request()
                local skew = tonumber(received.headers["wechatpay-timestamp"]) - os.time()
                assert.is_true(skew <= -598 and skew >= -602, tostring(skew))
                assert.is_true(verify_callback(received.headers, received.body, platform_key))
                local ok, code = client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key)
                assert.is_nil(ok)
                assert.equal("stale", code)
            end)

            it("missing_header omits one header", function()
                local names = { "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature",
                    "Wechatpay-Serial", "Wechatpay-Signature-Type" }
                for _, name in ipairs(names) do
                    local _, result = send_callback(env, { fault = "missing_header",
                        header = name })
                    assert.is_nil(result.sent.headers[name], name)
                    local received = last_request()
                    for _, other in ipairs(names) do
                        if other == name then
                            assert.is_nil(received.headers[other:lower()], other)
                        else
                            assert.truthy(received.headers[other:lower()], other)
                        end
                    end
                    if name ~= "Wechatpay-Signature-Type" then
                        local ok, code = client_verify(received.headers, received.body,
                            env.config.platform_serial, platform_key)
                        assert.is_nil(ok, name)
                        assert.equal("missing", code, name)
                    end
                end
                local res = control(env, "POST", "/sandbox/notify", { url = receiver().url(),
                    resource = {}, fault = "missing_header", header = "Content-Type" })
                assert.equal(400, res.status, res.body)
            end)

            it("unknown_serial names another serial", function()
                send_callback(env, { fault = "unknown_serial" })
                local received = last_request()
                local serial = received.headers["wechatpay-serial"]
                assert.are_not.equal(env.config.platform_serial, serial)
                assert.equal(40, #serial)
                assert.is_true(verify_callback(received.headers, received.body, platform_key))
                local ok, code = client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key)
                assert.is_nil(ok)
                assert.equal("serial", code)
            end)

            it("wrong_apiv3_key encrypts with another key", function()
                send_callback(env, { fault = "wrong_apiv3_key", associated_data = "transaction" })
                local received = last_request()
                assert.is_true(client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key))
                local plaintext, err = decrypt_resource(env, received.body)
                assert.is_nil(plaintext)
                assert.truthy(err)
            end)

            it("tampered_ciphertext fails the GCM tag", function()
                send_callback(env, { fault = "tampered_ciphertext" })
                local received = last_request()
                assert.is_true(client_verify(received.headers, received.body,
                    env.config.platform_serial, platform_key))
                assert.matches("^[%w+/]+=*$", core.json_decode(received.body).resource.ciphertext)
                local plaintext, err = decrypt_resource(env, received.body)
                assert.is_nil(plaintext)
                assert.truthy(err)
            end)

            it("signs with a newly signing certificate", function()
                local added = env.sandbox.control("POST", "/sandbox/certificates", {})
                env.sandbox.control("POST", "/sandbox/certificates/sign",
                    { serial = added.serial })
                send_callback(env)
                local received = last_request()
                assert.equal(added.serial, received.headers["wechatpay-serial"])
                assert.is_true(verify_callback(received.headers, received.body,
                    certificate_key(env, added.serial)))
            end)

            it("reports the receiver's status", function()
                local failing = start_receiver({ status = 500 })
                finally(failing.stop)
                local _, result = send_callback(env, { url = failing.url() })
                assert.equal(500, result.status)
                assert.equal('{"code":"FAIL","message":"失败"}', result.response_body)
                assert.is_nil(result.error)
                assert.equal(1, failing.count())
            end)

            it("reports an unreachable receiver", function()
                local port = closed_port()
                local _, result = send_callback(env, { url = "http://127.0.0.1:" .. port .. "/" })
                assert.equal(0, result.status)
                assert.equal("", result.response_body)
                assert.truthy(result.error:find("connect", 1, true), result.error)
                assert.truthy(result.sent.body:find('"resource_type":"encrypt-resource"', 1,
                    true))
            end)

            it("rejects non-loopback URLs without connecting", function()
                local port = receiver().port
                local before = receiver().count()
                local urls = {
                    "http://0.0.0.0:" .. port .. "/",
                    "http://[::]:" .. port .. "/",
                    "http://[::ffff:127.0.0.1]:" .. port .. "/",
                    "http://127.1:" .. port .. "/",
                    "http://2130706433:" .. port .. "/",
                    "http://0x7f.0.0.1:" .. port .. "/",
                    "http://0177.0.0.1:" .. port .. "/",
                    "http://127.0.0.01:" .. port .. "/",
                    "http://LOCALHOST:" .. port .. "/",
                    "http://ip6-localhost:" .. port .. "/",
                    "http://user@127.0.0.1:" .. port .. "/",
                    "https://127.0.0.1:" .. port .. "/",
                    "//127.0.0.1:" .. port .. "/",
                    "http://127.0.0.1:" .. port .. "/a b",
                    "http://127.0.0.1:0/",
                }
                for _, url in ipairs(urls) do
                    local res = control(env, "POST", "/sandbox/notify",
                        { url = url, resource = {} })
                    assert.equal(400, res.status, url .. " " .. res.body)
                    assert.equal("PARAM_ERROR", decode(res).code, url)
                end
                assert.equal(before, receiver().count())
                local _, result = send_callback(env, { url = "http://localhost:" .. port .. "/" })
                assert.equal(200, result.status)
                assert.equal(before + 1, receiver().count())
                assert.equal("localhost:" .. port, last_request().headers.host)
            end)

            it("rejects invalid callback requests", function()
                local bodies = {
                    { resource = "not an object" },
                    { resource = { 1, 2 } },
                    { event_type = "" },
                    { summary = 7 },
                    { associated_data = 1 },
                    { sign_with = "public_key" },
                    { sign_with = "other" },
                    { fault = "no_such_fault" },
                }
                local before = receiver().count()
                for i, fields in ipairs(bodies) do
                    local body = { url = receiver().url(), resource = {} }
                    for key, value in pairs(fields) do
                        body[key] = value
                    end
                    local res = control(env, "POST", "/sandbox/notify", body)
                    assert.equal(400, res.status, i .. " " .. res.body)
                end
                local res = control(env, "POST", "/sandbox/notify", { resource = {} })
                assert.equal(400, res.status, res.body)
                assert.equal(before, receiver().count())
            end)

            it("times out slow receivers without blocking", function()
                local slow = start_receiver({ delay = 8 })
                finally(slow.stop)
                local payload = assert(core.json_encode({ url = slow.url(), resource = {} }))
                local order = {}
                local notify_response
                local started = cqueues.monotime()
                local elapsed
                run_concurrently(function()
                    notify_response = raw_exchange(env.port, "POST /sandbox/notify HTTP/1.1\r\n"
                        .. "Host: localhost\r\nContent-Type: application/json\r\n"
                        .. "Content-Length: " .. #payload .. "\r\nConnection: close\r\n\r\n"
                        .. payload, 9)
                    elapsed = cqueues.monotime() - started
                    order[#order + 1] = "notify"
                end, function()
                    cqueues.sleep(0.3)
                    local health = raw_exchange(env.port, "GET /sandbox/health HTTP/1.1\r\n"
                        .. "Host: localhost\r\nConnection: close\r\n\r\n")
                    assert.matches("^HTTP/1%.1 200", health)
                    order[#order + 1] = "health"
                end)
                assert.same({ "health", "notify" }, order)
                assert.is_true(elapsed >= 4.5 and elapsed < 7, tostring(elapsed))
                local result = assert(core.json_decode(notify_response:match("\r\n\r\n(.*)$")))
                assert.equal(0, result.status)
                assert.truthy(result.error:find("timed out", 1, true), result.error)
                assert.equal(1, slow.count())
            end)
        end)

        describe("HTTP handling", function()
            it("serves pipelined keep-alive requests", function()
                local one = "GET /sandbox/health HTTP/1.1\r\nHost: x\r\n\r\n"
                local last = "GET /sandbox/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                local answer = raw_exchange(env.port, one .. one .. last)
                local _, count = answer:gsub("HTTP/1%.1 200 OK", "")
                assert.equal(3, count)
            end)

            it("rejects chunked request bodies", function()
                local answer = raw_exchange(env.port, "POST /v3/smartguide/guides HTTP/1.1\r\n"
                    .. "Host: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n")
                assert.matches("^HTTP/1%.1 411 ", answer)
            end)

            it("rejects malformed and oversized heads", function()
                assert.matches("^HTTP/1%.1 400 ", raw_exchange(env.port, "HELLO\r\n\r\n"))
                assert.matches("^HTTP/1%.1 400 ", raw_exchange(env.port,
                    "GET /x HTTP/1.1\r\nno colon here\r\n\r\n"))
                assert.matches("^HTTP/1%.1 431 ", raw_exchange(env.port,
                    "GET /x HTTP/1.1\r\nX-Big: " .. string.rep("a", 20000) .. "\r\n\r\n"))
                assert.matches("^HTTP/1%.1 413 ", raw_exchange(env.port,
                    "POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"))
            end)

            it("closes TLS handshakes on http", function()
                local answer = raw_exchange(env.port, "\22\3\1\0\4abcd")
                assert.equal("", answer)
                assert.truthy(env.sandbox.log():find("a TLS handshake arrived", 1, true))
            end)

            it("sends 100 Continue before the body", function()
                local body = '{"store_id":77}'
                local notify_response
                run_concurrently(function()
                    local con = assert(socket.connect("127.0.0.1", env.port))
                    con:setmode("b", "bn")
                    con:xwrite("POST /sandbox/stores HTTP/1.1\r\nHost: x\r\nContent-Length: "
                        .. #body .. "\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", "bn")
                    local interim = con:xread(-1024, "b", 5)
                    assert.matches("^HTTP/1%.1 100 Continue\r\n\r\n$", interim)
                    con:xwrite(body, "bn")
                    answer = con:xread(-4096, "b", 5)
                    con:close()
                end)
                assert.matches("^HTTP/1%.1 200 ", answer)
                assert.same({ 77, 1234 }, env.sandbox.control("GET", "/sandbox/stores"))
            end)

            it("survives peers that reset or stall", function()
                run_concurrently(function()
                    for _ = 1, 20 do
                        local con = assert(socket.connect("127.0.0.1", env.port))
                        con:setmode("b", "bn")
                        con:xwrite("POST /sandbox/stores HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
                            "bn")
                        con:close()
                    end
                end)
                assert.same({ ok = true }, env.sandbox.control("GET", "/sandbox/health"))
                assert.equal(200, request(env, "GET", "/v3/certificates").status)
            end)
        end)
    end)

    describe("in public_key mode", function()
        local env

        setup(function()
            env = open(helper.start_sandbox({ mode = "public_key" }))
        end)

        teardown(function()
            env.sandbox.stop()
        end)

        it("signs with the public key", function()
            local res = assert(request(env, "GET", "/v3/smartguide/guides?store_id=1234"))
            assert.equal(200, res.status, res.body)
            assert.equal(env.config.public_key_id, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, env.public_key))
        end)

        it("has no platform certificates", function()
            local res = assert(request(env, "GET", "/v3/certificates"))
            assert.equal(404, res.status)
            local err = decode(res)
            assert.equal("RESOURCE_NOT_EXISTS", err.code)
            assert.truthy(err.message:find("无可用的平台证书", 1, true))
            assert.is_true(verify(res, env.public_key))
        end)

        it("registers with the public key", function()
            local res = request(env, "POST", "/v3/smartguide/guides", guide_body(env.public_key),
                { serial = env.config.public_key_id })
            assert.equal(200, res.status, res.body)
            assert.is_true(verify(res, env.public_key))
            res = request(env, "POST", "/v3/smartguide/guides",
                guide_body(env.public_key, { userid = "alice" }),
                { serial = env.config.platform_serial })
            assert.equal(400, res.status, res.body)
            assert.equal("PARAM_ERROR", decode(res).code)
        end)

        it("offers no certificate rotation", function()
            assert.same({}, env.sandbox.control("GET", "/sandbox/certificates"))
            local attempts = {
                { "POST", "/sandbox/certificates", {} },
                { "POST", "/sandbox/certificates/sign", { serial = env.config.platform_serial } },
                { "DELETE", "/sandbox/certificates/" .. env.config.platform_serial },
            }
            for _, attempt in ipairs(attempts) do
                local res = control(env, attempt[1], attempt[2], attempt[3])
                assert.equal(409, res.status, attempt[2] .. " " .. res.body)
                assert.equal("INVALID_MODE", decode(res).code)
            end
            local res = assert(request(env, "GET", "/v3/certificates"))
            assert.equal(404, res.status)
            assert.equal("RESOURCE_NOT_EXISTS", decode(res).code)
        end)

        it("signs callbacks with the public key", function()
            local res, result = send_callback(env)
            assert.equal(200, res.status, res.body)
            assert.equal(200, result.status)
            local r = receiver()
            local received = r.request(r.count())
            assert.equal(env.config.public_key_id, received.headers["wechatpay-serial"])
            assert.is_true(verify_callback(received.headers, received.body, env.public_key))
            assert.is_true(client_verify(received.headers, received.body,
                env.config.public_key_id, env.public_key))
            assert.equal('{"out_trade_no":"T1"}', decrypt_resource(env, received.body))

            res = send_callback(env, { sign_with = "certificate" })
            assert.equal(400, res.status, res.body)
        end)
    end)

    describe("in both mode", function()
        local env
        local platform_key

        -- The first certificate expires in a day, as a certificate due for
        -- rotation does.
        local not_after = os.time() + 86400

        setup(function()
            env = open(helper.start_sandbox({ mode = "both",
                args = "--platform-not-after " .. not_after }))
            platform_key = platform_certificates(env)[1]:public_key()
        end)

        teardown(function()
            env.sandbox.stop()
        end)

        before_each(function()
            env.sandbox.control("POST", "/sandbox/reset")
        end)

        it("signs as Wechatpay-Serial asks", function()
            local target = "/v3/smartguide/guides?store_id=1234"
            local res = assert(request(env, "GET", target, nil,
                { serial = env.config.public_key_id }))
            assert.equal(env.config.public_key_id, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, env.public_key))

            res = assert(request(env, "GET", target))
            assert.equal(env.config.platform_serial, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, platform_key))

            res = assert(request(env, "POST", "/v3/smartguide/guides/LLAx/assign",
                '{"out_trade_no":"T1"}', { serial = env.config.public_key_id }))
            assert.equal(404, res.status)
            assert.equal(env.config.public_key_id, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, env.public_key))
        end)

        it("decrypts with either key", function()
            local res = request(env, "POST", "/v3/smartguide/guides", guide_body(env.public_key),
                { serial = env.config.public_key_id })
            assert.equal(200, res.status, res.body)
            res = request(env, "POST", "/v3/smartguide/guides",
                guide_body(platform_key, { userid = "alice" }),
                { serial = env.config.platform_serial })
            assert.equal(200, res.status, res.body)
            local guides = env.sandbox.control("GET", "/sandbox/guides")
            assert.equal(2, #guides)
            assert.equal("张三", guides[2].name)
        end)

        it("--platform-not-after sets the first expiry", function()
            local list = env.sandbox.control("GET", "/sandbox/certificates")
            assert.equal(not_after, list[1].not_after)
            assert.equal(env.config.platform_serial, list[1].serial)
            local res = assert(request(env, "GET", "/v3/certificates"))
            assert.equal(not_after, platform_certificates(env)[1]:not_after())
            local expire_time = decode(res).data[1].expire_time
            assert.equal(os.date("!%Y-%m-%dT%H:%M:%S", not_after + 8 * 3600) .. "+08:00",
                expire_time)
        end)

        it("rotates the certificate signer only", function()
            local target = "/v3/smartguide/guides?store_id=1234"
            local added = env.sandbox.control("POST", "/sandbox/certificates", {})
            local new_key = certificate_key(env, added.serial)
            env.sandbox.control("POST", "/sandbox/certificates/sign", { serial = added.serial })
            env.sandbox.control("DELETE", "/sandbox/certificates/" .. env.config.platform_serial)

            local res = assert(request(env, "GET", target))
            assert.equal(added.serial, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, new_key))
            res = assert(request(env, "GET", target, nil, { serial = env.config.public_key_id }))
            assert.equal(env.config.public_key_id, res.headers["wechatpay-serial"])
            assert.is_true(verify(res, env.public_key))

            res = request(env, "POST", "/v3/smartguide/guides", guide_body(platform_key),
                { serial = env.config.platform_serial })
            assert.equal(400, res.status, res.body)
            res = request(env, "POST", "/v3/smartguide/guides", guide_body(new_key),
                { serial = added.serial })
            assert.equal(200, res.status, res.body)
        end)

        it("signs callbacks with either key", function()
            local r = receiver()
            send_callback(env)
            local received = r.request(r.count())
            assert.equal(env.config.platform_serial, received.headers["wechatpay-serial"])
            assert.is_true(verify_callback(received.headers, received.body, platform_key))

            send_callback(env, { sign_with = "public_key" })
            received = r.request(r.count())
            assert.equal(env.config.public_key_id, received.headers["wechatpay-serial"])
            assert.is_true(verify_callback(received.headers, received.body, env.public_key))
            assert.is_false(verify_callback(received.headers, received.body, platform_key))

            local added = env.sandbox.control("POST", "/sandbox/certificates", {})
            env.sandbox.control("POST", "/sandbox/certificates/sign", { serial = added.serial })
            send_callback(env, { sign_with = "certificate" })
            received = r.request(r.count())
            assert.equal(added.serial, received.headers["wechatpay-serial"])
            assert.is_true(verify_callback(received.headers, received.body,
                certificate_key(env, added.serial)))
        end)
    end)

    describe("with --tls", function()
        local env

        setup(function()
            env = open(helper.start_sandbox({ tls = true, args = "--store-ids 1234,5678" }))
        end)

        teardown(function()
            env.sandbox.stop()
        end)

        it("serves https with the test CA", function()
            assert.matches("^https://localhost:%d+$", env.config.base_url)
            assert.equal(env.sandbox.dir .. "/ca_test_cert.pem", env.config.ca_file)
            local res = assert(request(env, "GET", "/v3/smartguide/guides?store_id=5678"))
            assert.equal(200, res.status, res.body)
        end)

        it("certificate names 127.0.0.1 too", function()
            local res = assert(env.http:request("GET", "https://127.0.0.1:" .. env.port
                .. "/sandbox/health", { ACCEPT }))
            assert.equal(200, res.status)
        end)

        it("rejects clients without the CA", function()
            local http = assert(core.new_http({ timeout = 5 }))
            local res, code = http:request("GET", env.config.base_url .. "/sandbox/health", {})
            assert.is_nil(res)
            assert.equal("tls", code)
        end)
    end)

    describe("command line", function()
        local function run_sandbox(args)
            return helper.run("lua5.4 bin/wechatpay-sandbox " .. args .. " 2>&1")
        end

        it("rejects non-loopback hosts", function()
            for _, host in ipairs({ "0.0.0.0", "::", "192.168.1.10", "example.com" }) do
                local dir = helper.tmpdir()
                local out, ok = run_sandbox("--host " .. helper.shell_quote(host) .. " --dir "
                    .. helper.shell_quote(dir))
                assert.is_false(ok)
                assert.truthy(out:find("not a loopback address", 1, true), out)
                assert.is_false(helper.exists(dir .. "/sandbox.json"))
            end
        end)

        it("rejects unknown options and modes", function()
            local out, ok = run_sandbox("--colour")
            assert.is_false(ok)
            assert.truthy(out:find("unknown option --colour", 1, true), out)
            out, ok = run_sandbox("--mode public")
            assert.is_false(ok)
            assert.truthy(out:find("mode", 1, true), out)
        end)

        it("rejects an invalid --platform-not-after", function()
            local dir = helper.tmpdir()
            local quoted = helper.shell_quote(dir)
            local out, ok = run_sandbox("--platform-not-after 5 --dir " .. quoted)
            assert.is_false(ok)
            assert.truthy(out:find("platform_not_after must be", 1, true), out)
            out, ok = run_sandbox("--platform-not-after soon --dir " .. quoted)
            assert.is_false(ok)
            assert.truthy(out:find("--platform-not-after must be", 1, true), out)
            assert.is_false(helper.exists(dir .. "/sandbox.json"))
        end)

        it("--help lists the options", function()
            local out, ok = run_sandbox("--help")
            assert.is_true(ok)
            for _, option in ipairs({ "--host", "--port", "--mode", "--dir", "--tls", "--mchid",
                "--store-ids", "--parent-pid", "--platform-not-after" }) do
                assert.truthy(out:find(option, 1, true), option)
            end
        end)

        it("listens on ::1", function()
            local sandbox = helper.start_sandbox({ args = "--host ::1" })
            finally(sandbox.stop)
            assert.matches("^http://%[::1%]:%d+$", sandbox.config.base_url)
            assert.same({ ok = true }, sandbox.control("GET", "/sandbox/health"))
        end)

        it("stops on SIGTERM", function()
            local sandbox = helper.start_sandbox({})
            local config_path = sandbox.dir .. "/sandbox.json"
            assert.is_true(helper.exists(config_path))
            sandbox.stop()
            assert.is_true(wait_until(function()
                return not pid_alive(sandbox.pid)
            end, 5))
            assert.truthy(sandbox.log():find("sandbox: stopped", 1, true))
            assert.is_false(helper.exists(config_path))
        end)

        it("exits when the parent is gone", function()
            -- The parent lives until the sandbox is up, then goes.
            local parent = helper.run("sleep 60 > /dev/null 2>&1 & echo $!"):match("%d+")
            local sandbox = helper.start_sandbox({ args = "--parent-pid " .. parent })
            finally(sandbox.stop)
            assert.is_true(pid_alive(sandbox.pid))
            os.execute("kill " .. parent)
            local gone = wait_until(function()
                return not pid_alive(sandbox.pid)
            end, 8)
            assert.is_true(gone)
            assert.truthy(sandbox.log():find("parent process " .. parent, 1, true))
        end)

        it("logs no secrets", function()
            local sandbox = helper.start_sandbox({})
            finally(sandbox.stop)
            local e = open(sandbox)
            local key = platform_certificates(e)[1]:public_key()
            local res = request(e, "POST", "/v3/smartguide/guides", guide_body(key),
                { serial = e.config.platform_serial })
            assert.equal(200, res.status, res.body)
            request(e, "GET", "/v3/certificates", nil, { signature = "AAAA" })
            sandbox.stop()
            assert.is_true(wait_until(function()
                return not pid_alive(sandbox.pid)
            end, 5))
            local log = sandbox.log()
            assert.truthy(log:find("POST /v3/smartguide/guides 200", 1, true), log)
            for _, secret in ipairs({ "张三", "13800138000", e.config.apiv3_key, "signature=",
                "WECHATPAY2-SHA256-RSA2048", "PRIVATE KEY" }) do
                assert.is_nil(log:find(secret, 1, true), secret)
            end
        end)
    end)
end)
