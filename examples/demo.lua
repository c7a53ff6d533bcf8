-- The demo: starts the bundled sandbox, then registers a staff member,
-- finds them, assigns them to an order and updates them, through signed,
-- verified and encrypted APIv3 calls.  Run it with `make demo`, or
-- `lua5.4 examples/demo.lua [certificate|public_key|both]` from the
-- repository root after `make`.
local core = require("wechatpay.core")
local wechatpay = require("wechatpay")

local mode = arg[1] or "certificate"

local function shell_quote(s)
    return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function read(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local data = f:read("a")
    f:close()
    return data
end

local function fail(what, err)
    io.stderr:write(string.format("demo: %s failed: %s\n", what, tostring(err)))
    os.exit(1)
end

-- Starts the sandbox in the background; returns its pid and folder.
local function start_sandbox()
    local dir = io.popen("mktemp -d /tmp/wechatpay-demo.XXXXXX"):read("l")
    local own_pid = read("/proc/self/stat"):match("^(%d+)")
    local command = string.format("lua5.4 bin/wechatpay-sandbox --port 0 --mode %s "
        .. "--dir %s --parent-pid %s > %s 2>&1 & echo $!", mode, shell_quote(dir),
        own_pid, shell_quote(dir .. "/sandbox.log"))
    local pid = io.popen(command):read("l")
    for _ = 1, 200 do
        if read(dir .. "/sandbox.json") then
            return pid, dir
        end
        os.execute("sleep 0.05")
    end
    os.execute("kill " .. pid)
    fail("starting the sandbox", read(dir .. "/sandbox.log"))
end

-- Shows a name or mobile without revealing it: the first character and
-- the last four bytes at most.
local function mask(text)
    if #text <= 4 then
        return "****"
    end
    local first = text:match("^[%z\1-\127\194-\244][\128-\191]*")
    return first .. "****" .. (#text > 8 and text:sub(-4) or "")
end

local pid, dir = start_sandbox()
local ok, run_err = pcall(function()
    local config = assert(core.json_decode(read(dir .. "/sandbox.json")))
    print(string.format("sandbox on %s, %s mode", config.base_url, mode))

    local client, err = wechatpay.new({
        mchid = config.mchid,
        serial_no = config.serial_no,
        private_key_file = config.private_key_file,
        apiv3_key = mode ~= "public_key" and config.apiv3_key or nil,
        public_key_file = mode ~= "certificate" and config.public_key_file or nil,
        public_key_id = mode ~= "certificate" and config.public_key_id or nil,
        base_url = config.base_url,
    })
    if not client then
        fail("wechatpay.new", err)
    end
    print(tostring(client))

    local guide
    guide, err = client:register_guide({
        store_id = 1234,
        corpid = "wwd3ca1b4c1cd9b6a8",
        userid = "zhangsan",
        name = "张三",
        mobile = "13800138000",
        qr_code = "https://open.work.weixin.qq.com/wwopen/userQRCode?vcode=demo",
        avatar = "https://wx.qlogo.cn/mmopen/demo/0",
    })
    if not guide then
        fail("register_guide", err)
    end
    print("register_guide  ok  guide_id " .. guide.guide_id)

    local page
    page, err = client:query_guides({ store_id = 1234, userid = "zhangsan" })
    if not page then
        fail("query_guides", err)
    end
    local found = page.data[1]
    print(string.format("query_guides    ok  %d found: %s, name %s, mobile %s",
        page.total_count, found.guide_id, mask(found.name), mask(found.mobile)))

    local order = "DEMO" .. os.time()
    ok, err = guide:assign(order)
    if not ok then
        fail("assign", err)
    end
    print("assign          ok  order " .. order)

    ok, err = guide:update({ mobile = "13900139000", avatar = "https://wx.qlogo.cn/mmopen/demo/1" })
    if not ok then
        fail("update", err)
    end
    page, err = client:query_guides({ store_id = 1234, mobile = "13900139000" })
    if not page then
        fail("query_guides by the new mobile", err)
    end
    print(string.format("update          ok  found again by the new mobile: %s, mobile %s",
        page.data[1].guide_id, mask(page.data[1].mobile)))

    for _, entry in ipairs(client:certificates()) do
        print(string.format("verified with   %s (%s)", entry.serial, entry.source))
    end
    client:close()
end)

os.execute("kill " .. pid .. " 2>/dev/null")
os.execute("rm -rf " .. shell_quote(dir))
if not ok then
    fail("the demo", run_err)
end
print("all four calls succeeded")
