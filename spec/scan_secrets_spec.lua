-- tools/scan-secrets.lua, which checks a test run's output for secrets:
-- it must find a planted one, and never print it.
local helper = require("helper")

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function scan(needles, captured)
    local dir = helper.tmpdir()
    local lines = {}
    for _, pair in ipairs(needles) do
        lines[#lines + 1] = pair[1] .. "\t" .. hex(pair[2]) .. "\n"
    end
    helper.write(dir .. "/needles", table.concat(lines))
    if captured then
        helper.write(dir .. "/captured", captured)
    end
    local out = helper.run("lua5.4 tools/scan-secrets.lua " .. dir .. "; echo \"exit=$?\"")
    return out, tonumber(out:match("exit=(%d+)"))
end

describe("scan-secrets", function()
    teardown(helper.cleanup)

    it("passes output without secrets", function()
        local out, status = scan({ { "personal", "张三丰" } }, "wechatpay: input error: name\n")
        assert.equals(0, status, out)
    end)

    it("finds a planted name without printing it", function()
        local out, status = scan({ { "personal", "张三丰" }, { "apiv3_key", ("k"):rep(32) } },
            "line one\nwechatpay: api error: 张三丰 is wrong\n")
        assert.equals(1, status)
        assert.matches("a personal appears in captured output line 2", out, 1, true)
        assert.is_nil(out:find("张三丰", 1, true))
    end)

    it("finds an Authorization header by its form", function()
        local out, status = scan({ { "personal", "zzzz" } },
            'WECHATPAY2-SHA256-RSA2048 mchid="1",nonce_str="2"\n')
        assert.equals(1, status)
        assert.matches("authorization", out)
    end)

    it("fails when nothing was recorded", function()
        local _, status = scan({}, nil)
        assert.equals(2, status)
    end)
end)
