-- The client against a hostile server that answers with exact bytes:
-- trailers, repeated headers, redirects, interim responses, huge
-- headers, malformed timestamps and control characters.
local core = require("wechatpay.core")
local helper = require("helper")
local wechatpay = require("wechatpay")

local PUBLIC_KEY_ID = "PUB_KEY_ID_0114232134912410000000000000"

describe("hostile server", function()
    local dir, pid, port, response_path
    local platform, client

    -- Writes the next answer: a status line, header lines and a body.
    local function answer(status_line, headers, body)
        local head = status_line .. "\r\n" .. table.concat(headers, "\r\n")
        if #headers > 0 then
            head = head .. "\r\n"
        end
        helper.write(response_path, head .. "\r\n" .. (body or ""))
    end

    -- The four Wechatpay headers for body, signed now.
    local function signed_headers(body, overrides)
        local ts, nonce = tostring(os.time()), core.nonce()
        local values = {
            ["Wechatpay-Timestamp"] = ts,
            ["Wechatpay-Nonce"] = nonce,
            ["Wechatpay-Serial"] = PUBLIC_KEY_ID,
            ["Wechatpay-Signature"] = platform:sign(core.response_message(ts, nonce, body)),
        }
        for k, v in pairs(overrides or {}) do
            values[k] = v ~= false and v or nil
        end
        local lines = {}
        for _, name in ipairs({ "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial",
            "Wechatpay-Signature" }) do
            if values[name] then
                lines[#lines + 1] = name .. ": " .. values[name]
            end
        end
        return lines, values
    end

    setup(function()
        dir = helper.tmpdir()
        response_path = dir .. "/response"
        answer("HTTP/1.1 204 No Content", {})
        pid = helper.run(string.format("lua5.4 spec/support/raw_server.lua %s %s "
            .. "> %s 2>&1 & echo $!", response_path, dir .. "/port", dir .. "/log")):match("%d+")
        for _ = 1, 100 do
            if helper.exists(dir .. "/port") then
                break
            end
            helper.sleep(0.05)
        end
        port = helper.read(dir .. "/port")

        local platform_pem = core.generate_test_key(2048)
        platform = assert(core.load_private_key(platform_pem))
        local cert = core.issue_test_certificate({
            key = platform_pem, serial = "01", common_name = "hostile",
            not_before = os.time() - 60, not_after = os.time() + 86400,
        })
        client = assert(wechatpay.new({
            mchid = "1900000109", serial_no = "01",
            private_key = core.generate_test_key(2048),
            public_key = cert, public_key_id = PUBLIC_KEY_ID,
            base_url = "http://127.0.0.1:" .. port, timeout = 5,
        }))
    end)

    teardown(function()
        client:close()
        os.execute("kill " .. pid .. " 2>/dev/null")
        helper.cleanup()
    end)

    local function call()
        return client:request("GET", "/v3/smartguide/guides", { query = { store_id = 1 } })
    end

    it("accepts a chunked body signed in its headers", function()
        local body = '{"total_count":0}'
        answer("HTTP/1.1 200 OK", (function()
            local lines = signed_headers(body)
            lines[#lines + 1] = "Transfer-Encoding: chunked"
            return lines
        end)(), string.format("%x\r\n%s\r\n0\r\n\r\n", #body, body))
        local res, err = call()
        assert.is_nil(err)
        assert.equals(0, res.data.total_count)
    end)

    it("ignores a signature sent as a trailer", function()
        local body = '{"total_count":0}'
        local lines, values = signed_headers(body, { ["Wechatpay-Signature"] = false })
        lines[#lines + 1] = "Transfer-Encoding: chunked"
        lines[#lines + 1] = "Trailer: Wechatpay-Signature"
        local _, full = signed_headers(body, {
            ["Wechatpay-Timestamp"] = values["Wechatpay-Timestamp"],
            ["Wechatpay-Nonce"] = values["Wechatpay-Nonce"],
        })
        answer("HTTP/1.1 200 OK", lines, string.format("%x\r\n%s\r\n0\r\n"
            .. "Wechatpay-Signature: %s\r\n\r\n", #body, body, full["Wechatpay-Signature"]))
        local res, err = call()
        assert.is_nil(res)
        assert.equals("verify", err.kind)
        assert.equals("missing", err.reason)
    end)

    it("refuses a repeated signature header", function()
        local lines, values = signed_headers("")
        lines[#lines + 1] = "Wechatpay-Signature: " .. values["Wechatpay-Signature"]
        answer("HTTP/1.1 204 No Content", lines)
        local res, err = call()
        assert.is_nil(res)
        assert.equals("verify", err.kind)
        assert.equals("signature", err.reason)
    end)

    it("does not follow a redirect", function()
        answer("HTTP/1.1 302 Found", { "Location: http://127.0.0.1:1/v3/elsewhere",
            "Content-Length: 0" })
        local res, err = call()
        assert.is_nil(res)
        assert.equals("api", err.kind)
        assert.equals(302, err.status)
    end)

    it("reads the final response after 100 Continue", function()
        local lines = (signed_headers(""))
        answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content", lines)
        local res, err = call()
        assert.is_nil(err)
        assert.equals(204, res.status)
    end)

    it("reads an HTTP/1.0 body that ends at close", function()
        local body = '{"total_count":3}'
        answer("HTTP/1.0 200 OK", (signed_headers(body)), body)
        local res, err = call()
        assert.is_nil(err)
        assert.equals(3, res.data.total_count)
    end)

    it("fails cleanly on a 2 MB header", function()
        answer("HTTP/1.1 204 No Content", { "X-Big: " .. ("x"):rep(2 * 1024 * 1024) })
        local res, err = call()
        assert.is_nil(res)
        assert.equals("network", err.kind)
    end)

    for _, ts in ipairs({ "1e9", "-1", "99999999999999999999", "12x", "" }) do
        it("refuses Wechatpay-Timestamp " .. string.format("%q", ts), function()
            answer("HTTP/1.1 204 No Content", (signed_headers("", {
                ["Wechatpay-Timestamp"] = ts })))
            local res, err = call()
            assert.is_nil(res)
            assert.equals("verify", err.kind)
            assert.is_true(err.reason == "header" or err.reason == "missing", err.reason)
        end)
    end

    it("keeps a hostile serial out of the terminal", function()
        answer("HTTP/1.1 204 No Content", (signed_headers("", {
            ["Wechatpay-Serial"] = "X\27[2J\27[31mRED" })))
        local res, err = call()
        assert.is_nil(res)
        local text = tostring(err)
        assert.is_nil(text:find("[%c]"), text)
    end)

    it("reads a bare 404 for certificates as an api error", function()
        local body = "<html>Not Found</html>"
        answer("HTTP/1.1 404 Not Found", { "Content-Length: " .. #body }, body)
        local certificate_client = assert(wechatpay.new({
            mchid = "1900000109", serial_no = "01",
            private_key = core.generate_test_key(2048), apiv3_key = ("k"):rep(32),
            base_url = "http://127.0.0.1:" .. port,
        }))
        local ok, err = certificate_client:guide("LLA1"):update({ name = "x" })
        assert.is_nil(ok)
        assert.equals("api", err.kind)
        assert.equals(404, err.status)
        certificate_client:close()
    end)

    it("keeps a platform message on one line", function()
        local body = '{"code":"SYSTEM_ERROR","message":"line1\\nline2\\r\\u001b[31m"}'
        answer("HTTP/1.1 500 Internal Server Error", { "Content-Length: " .. #body }, body)
        local res, err = call()
        assert.is_nil(res)
        assert.equals("SYSTEM_ERROR", err.code)
        local text = tostring(err)
        assert.is_nil(text:find("[%c]"), text)
        assert.matches("line1\\nline2", text, 1, true)
    end)
end)
