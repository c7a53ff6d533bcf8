-- The wechatpay-guide command, run as a subprocess against the sandbox,
-- and its CSV and masking helpers.
local config = require("wechatpay.cli.config")
local core = require("wechatpay.core")
local csv = require("wechatpay.cli.csv")
local helper = require("helper")
local output = require("wechatpay.cli.output")
local secrets = require("support.secrets")
local wechatpay = require("wechatpay")

local q = helper.shell_quote

-- Runs a shell command without the sanitizer runtime that the test runner
-- may preload, which makes some programs (pgrep) hang.  Returns its
-- stdout and whether it exited 0.
local function run_plain(command)
    return helper.run("env -u LD_PRELOAD sh -c " .. q(command))
end

local function json_decode(text)
    return assert(core.json_decode(text), "not JSON: " .. text)
end

-- Runs `lua5.4 bin/wechatpay-guide ARGS` with a clean environment
-- (HOME and XDG_CONFIG_HOME in a temporary folder) plus opts.env.  With
-- opts.time_limit (seconds) the tool is killed after that long, and the
-- status is then 124.  Returns { status, stdout, stderr }.
local function run_tool(args, opts)
    opts = opts or {}
    local dir = helper.tmpdir()
    local env = { "PATH=" .. os.getenv("PATH"), "HOME=" .. dir,
        "XDG_CONFIG_HOME=" .. (opts.xdg or (dir .. "/xdg")), "LANG=C.UTF-8" }
    for name, value in pairs(opts.env or {}) do
        env[#env + 1] = name .. "=" .. value
    end
    for i, item in ipairs(env) do
        env[i] = q(item)
    end
    local limit = opts.time_limit and string.format("timeout %g ", opts.time_limit) or ""
    local command = string.format("%senv -i %s lua5.4 bin/wechatpay-guide %s > %s 2> %s; "
        .. "echo $?", limit, table.concat(env, " "), args, q(dir .. "/out"), q(dir .. "/err"))
    local status = tonumber((helper.run(command)))
    local result = { status = status, stdout = helper.read(dir .. "/out"),
        stderr = helper.read(dir .. "/err") }
    -- Output shown on request is personal data by design; the rest must
    -- hold none.
    if not args:find("--show-personal-data", 1, true) then
        secrets.capture(result.stdout)
        secrets.capture(result.stderr)
    end
    return result
end

local function lines_of(text)
    local lines = {}
    for line in text:gmatch("([^\n]*)\n") do
        lines[#lines + 1] = line
    end
    return lines
end

-- Parses CSV with Python's csv module, an implementation independent of
-- the one under test.
local function python_csv(text)
    local dir = helper.tmpdir()
    local path = helper.write(dir .. "/data.csv", text)
    local out, ok = run_plain("python3 -c " .. q("import csv, json, sys; "
        .. "print(json.dumps(list(csv.reader(open(sys.argv[1], newline='', "
        .. "encoding='utf-8')))))") .. " " .. q(path))
    assert(ok, "python3 could not parse the CSV")
    return json_decode(out)
end

local REGISTER_ARGS = "--corpid ww1 --qr-code https://q.example/1 --avatar https://a.example/1"

describe("wechatpay.cli.csv", function()
    it("parses quotes, commas and line breaks", function()
        local records = assert(csv.parse('a,"b,c","d ""e""",f\r\n"x\r\ny",,z\n'))
        assert.equals(2, #records)
        assert.same({ "a", "b,c", 'd "e"', "f" }, records[1].fields)
        assert.same({ "x\r\ny", "", "z" }, records[2].fields)
        assert.equals(1, records[1].line)
        assert.equals(2, records[2].line)
    end)

    it("drops the byte-order mark", function()
        local records = assert(csv.parse("\239\187\191userid\nrobert"))
        assert.same({ "userid" }, records[1].fields)
        assert.same({ "robert" }, records[2].fields)
    end)

    it("counts lines inside quoted fields", function()
        local records = assert(csv.parse('a\n"1\n2\n3"\nb\n'))
        assert.equals(5, records[3].line)
    end)

    it("marks blank lines", function()
        local records = assert(csv.parse('a\n\n""\n'))
        assert.is_true(records[2].blank)
        assert.is_false(records[3].blank)
    end)

    it("rejects an unclosed quote", function()
        local records, err = csv.parse('a\n"open,b\n')
        assert.is_nil(records)
        assert.matches("line 2: a quoted field is not closed", err)
    end)

    it("rejects text after a closing quote", function()
        local records, err = csv.parse('"a"b,c\n')
        assert.is_nil(records)
        assert.matches("line 1: unexpected", err)
    end)

    it("quotes fields that need it", function()
        assert.equals('plain,"a,b","say ""hi""","x\ny"," lead"',
            csv.record({ "plain", "a,b", 'say "hi"', "x\ny", " lead" }))
    end)
end)

describe("wechatpay.cli.output", function()
    it("masks names and mobiles", function()
        assert.equals("张*", output.mask_name("张三"))
        assert.equals("欧***", output.mask_name("欧阳娜娜"))
        assert.equals("*", output.mask_name("王"))
        assert.equals("138****8000", output.mask_mobile("13800138000"))
        assert.equals("+85*****4567", output.mask_mobile("+85291234567"))
        assert.equals("*****13", output.mask_mobile("1380013"))
    end)

    it("counts CJK characters as two columns", function()
        assert.equals(4, output.display_width("张三"))
        assert.equals(7, output.display_width("Bob张三"))
        assert.equals(1, output.display_width("e\204\129"))
    end)

    it("escapes control characters", function()
        assert.equals("a\\x1B[31mb", output.printable("a\27[31mb"))
        assert.equals("\\xFF", output.printable("\255"))
    end)
end)

describe("wechatpay-guide", function()
    local sandbox, config_path

    local function guides()
        return sandbox.control("GET", "/sandbox/guides")
    end

    local function tool(args, opts)
        return run_tool("--config " .. q(config_path) .. " " .. args, opts)
    end

    local function register(userid, name, mobile)
        local result = tool(string.format("register --store-id 1234 --userid %s --name %s "
            .. "--mobile %s %s", q(userid), q(name), q(mobile), REGISTER_ARGS))
        assert.equals(0, result.status, result.stderr)
        return result
    end

    -- Writes a private copy of sandbox.json with changes (false removes).
    local function config_copy(changes, mode)
        local settings = json_decode(helper.read(config_path))
        for name, value in pairs(changes or {}) do
            settings[name] = value ~= false and value or nil
        end
        local dir = helper.tmpdir()
        return helper.write(dir .. "/config.json", core.json_encode(settings), mode or "600")
    end

    setup(function()
        sandbox = helper.start_sandbox()
        config_path = sandbox.dir .. "/sandbox.json"
    end)

    teardown(function()
        sandbox.stop()
        helper.cleanup()
    end)

    before_each(function()
        sandbox.control("POST", "/sandbox/reset")
    end)

    describe("help", function()
        it("shows the commands and settings", function()
            local result = run_tool("--help")
            assert.equals(0, result.status)
            assert.matches("Usage: wechatpay%-guide", result.stdout)
            for _, command in ipairs({ "register", "list", "find", "assign", "update", "sync",
                "certs", "sandbox" }) do
                assert.matches("\n   " .. command .. " ", result.stdout, 1, true)
            end
            assert.matches("WECHATPAY_APIV3_KEY_FILE", result.stdout, 1, true)
            assert.matches("Exit status", result.stdout, 1, true)
        end)

        for _, command in ipairs({ "register", "list", "find", "assign", "update", "sync",
            "certs" }) do
            it("of " .. command .. " shows its usage", function()
                local result = run_tool(command .. " --help")
                assert.equals(0, result.status)
                assert.matches("Usage: wechatpay-guide " .. command, result.stdout, 1, true)
            end)
        end

        it("of sandbox shows the sandbox's options", function()
            local result = run_tool("sandbox --help")
            assert.equals(0, result.status)
            assert.matches("Usage: wechatpay-guide sandbox", result.stdout, 1, true)
            assert.matches("--port PORT", result.stdout, 1, true)
        end)

        it("rejects an unknown option with status 2", function()
            local result = run_tool("list --no-such-option")
            assert.equals(2, result.status)
            assert.matches("unknown option '--no-such-option'", result.stderr, 1, true)
        end)
    end)

    describe("commands", function()
        it("register then list masks personal data", function()
            local registered = register("robert", "张三", "13800138000")
            local guide_id = registered.stdout:match("(LLA%w+)")
            assert.is_truthy(guide_id)

            local listed = tool("list --store-id 1234")
            assert.equals(0, listed.status, listed.stderr)
            assert.matches(guide_id, listed.stdout, 1, true)
            assert.matches("张*", listed.stdout, 1, true)
            assert.matches("138****8000", listed.stdout, 1, true)
            assert.is_nil(listed.stdout:find("张三", 1, true))
            assert.is_nil(listed.stdout:find("13800138000", 1, true))

            local unmasked = tool("list --store-id 1234 --show-personal-data")
            assert.matches("张三", unmasked.stdout, 1, true)
            assert.matches("13800138000", unmasked.stdout, 1, true)
        end)

        it("register rejects an invalid mobile before sending", function()
            local result = tool("register --store-id 1234 --userid bad --name 张三 "
                .. "--mobile 1380013 " .. REGISTER_ARGS)
            assert.equals(2, result.status)
            assert.matches("mobile is invalid", result.stderr, 1, true)
            assert.is_nil(result.stderr:find("1380013", 1, true))
            assert.equals(0, #guides())
        end)

        it("list walks every page", function()
            for i = 1, 23 do
                sandbox.control("POST", "/sandbox/guides", { store_id = 1234,
                    name = "员工" .. i, mobile = string.format("139%08d", i),
                    userid = "page" .. i })
            end
            local result = tool("list --store-id 1234 --format json")
            assert.equals(0, result.status, result.stderr)
            assert.equals(23, #json_decode(result.stdout))
        end)

        it("find by userid, mobile or work_id", function()
            sandbox.control("POST", "/sandbox/guides", { store_id = 1234, name = "李四",
                mobile = "13900000001", userid = "lisi", work_id = "W-7" })
            register("robert", "张三", "13800138000")
            for _, filter in ipairs({ "--userid lisi", "--mobile 13900000001",
                "--work-id W-7" }) do
                local result = tool("find --store-id 1234 --format json " .. filter)
                assert.equals(0, result.status, result.stderr)
                local found = json_decode(result.stdout)
                assert.equals(1, #found, filter)
                assert.equals("lisi", found[1].userid, filter)
            end
            local none = tool("find --store-id 1234 --userid nobody")
            assert.equals(0, none.status)
            assert.matches("no staff matched", none.stderr, 1, true)
            local both = tool("find --store-id 1234 --userid lisi --work-id W-7")
            assert.equals(2, both.status)
        end)

        it("assign records the order", function()
            local guide_id = register("robert", "张三", "13800138000").stdout:match("(LLA%w+)")
            local result = tool("assign " .. guide_id .. " ORDER-1")
            assert.equals(0, result.status, result.stderr)
            assert.matches("assigned", result.stdout, 1, true)
            local assignments = sandbox.control("GET", "/sandbox/assignments")
            assert.equals(1, #assignments)
            assert.equals("ORDER-1", assignments[1].out_trade_no)
            assert.equals(guide_id, assignments[1].guide_id)
        end)

        it("assign to an unknown guide fails with status 1", function()
            local result = tool("assign LLAnosuchguide ORDER-1")
            assert.equals(1, result.status)
            assert.matches("RESOURCE_NOT_EXISTS", result.stderr, 1, true)
        end)

        it("update changes the given fields", function()
            local guide_id = register("robert", "张三", "13800138000").stdout:match("(LLA%w+)")
            local result = tool("update " .. guide_id .. " --mobile 13900139000 "
                .. "--avatar https://a.example/2")
            assert.equals(0, result.status, result.stderr)
            local stored = guides()[1]
            assert.equals("13900139000", stored.mobile)
            assert.equals("https://a.example/2", stored.avatar)
            assert.equals("张三", stored.name)
            local nothing = tool("update " .. guide_id)
            assert.equals(2, nothing.status)
            assert.matches("nothing to update", nothing.stderr, 1, true)
        end)

        it("certs lists the downloaded certificate", function()
            local result = tool("certs --format json")
            assert.equals(0, result.status, result.stderr)
            local certs = json_decode(result.stdout)
            assert.equals(1, #certs)
            assert.equals(sandbox.config.platform_serial, certs[1].serial)
            assert.equals("download", certs[1].source)
            assert.matches("^%d%d%d%d%-%d%d%-%d%dT", certs[1].not_after)
        end)

        it("certs --refresh shows what changed", function()
            local result = tool("certs --refresh")
            assert.equals(0, result.status, result.stderr)
            assert.matches("change", result.stdout, 1, true)
            assert.matches(sandbox.config.platform_serial .. "%s+download.*added",
                result.stdout)
        end)

        it("sandbox command serves a working configuration", function()
            local dir = helper.tmpdir()
            local pid = run_plain(string.format("lua5.4 bin/wechatpay-guide sandbox --port 0 "
                .. "--dir %s --quiet > %s 2>&1 & echo $!", q(dir), q(dir .. "/log"))):match("%d+")
            for _ = 1, 100 do
                if helper.exists(dir .. "/sandbox.json") then
                    break
                end
                helper.sleep(0.05)
            end
            local result = run_tool("--config " .. q(dir .. "/sandbox.json")
                .. " list --store-id 1234")
            os.execute("kill " .. pid)
            assert.equals(0, result.status, result.stderr .. helper.read(dir .. "/log"))
            assert.matches("no staff registered in store 1234", result.stderr, 1, true)
        end)
    end)

    describe("output", function()
        it("csv and json parse back", function()
            sandbox.control("POST", "/sandbox/guides", { store_id = 1234,
                name = '王"小,明', mobile = "13800000009", userid = "quote", work_id = "W1" })
            local as_csv = tool("list --store-id 1234 --format csv --show-personal-data")
            assert.equals(0, as_csv.status, as_csv.stderr)
            local records = python_csv(as_csv.stdout)
            assert.same({ "guide_id", "store_id", "userid", "work_id", "name", "mobile" },
                records[1])
            assert.equals("1234", records[2][2])
            assert.equals("quote", records[2][3])
            assert.equals('王"小,明', records[2][5])
            assert.equals("13800000009", records[2][6])

            local as_json = tool("list --store-id 1234 --format json --show-personal-data")
            local list = json_decode(as_json.stdout)
            assert.equals(1234, list[1].store_id)
            assert.equals('王"小,明', list[1].name)
            assert.equals("W1", list[1].work_id)
        end)

        it("table columns align with CJK names", function()
            register("a", "张三", "13800000001")
            register("b", "Bob", "13800000002")
            register("c", "欧阳娜娜", "+85291234567")
            local result = tool("list --store-id 1234 --show-personal-data")
            assert.equals(0, result.status, result.stderr)
            local lines = lines_of(result.stdout)
            assert.equals(4, #lines)
            local header_column = output.display_width(lines[1]:sub(1,
                lines[1]:find("mobile", 1, true) - 1))
            for i = 2, 4 do
                local start = lines[i]:find("[%d+]+$")
                assert.equals(header_column, output.display_width(lines[i]:sub(1, start - 1)),
                    lines[i])
            end
        end)
    end)

    describe("configuration", function()
        it("rejects a configuration file others can read", function()
            local path = config_copy({}, "644")
            local result = run_tool("--config " .. q(path) .. " list --store-id 1234")
            assert.equals(2, result.status)
            assert.matches("chmod 600 " .. path, result.stderr, 1, true)
            os.execute("chmod 600 " .. q(path))
            assert.equals(0, run_tool("--config " .. q(path) .. " list --store-id 1234").status)
        end)

        it("rejects an APIv3 key file others can read", function()
            local path = config_copy({ apiv3_key = false, mode = "certificate" })
            local key_path = helper.write(helper.tmpdir() .. "/apiv3.key",
                sandbox.config.apiv3_key .. "\n", "640")
            local args = "--config " .. q(path) .. " certs"
            local env = { WECHATPAY_APIV3_KEY_FILE = key_path }
            local result = run_tool(args, { env = env })
            assert.equals(2, result.status)
            assert.matches("chmod 600 " .. key_path, result.stderr, 1, true)
            assert.is_nil(result.stderr:find(sandbox.config.apiv3_key, 1, true))
            os.execute("chmod 600 " .. q(key_path))
            result = run_tool(args, { env = env })
            assert.equals(0, result.status, result.stderr)
            assert.matches(sandbox.config.platform_serial, result.stdout, 1, true)
        end)

        it("rejects a private key file others can read", function()
            local key_path = helper.write(helper.tmpdir() .. "/key.pem",
                helper.read(sandbox.config.private_key_file), "644")
            local result = tool("list --store-id 1234",
                { env = { WECHATPAY_PRIVATE_KEY_FILE = key_path } })
            assert.equals(2, result.status)
            assert.matches("chmod 600 " .. key_path, result.stderr, 1, true)
        end)

        it("requires base_url", function()
            local path = config_copy({ base_url = false })
            local result = run_tool("--config " .. q(path) .. " list --store-id 1234")
            assert.equals(2, result.status)
            assert.matches("base_url is not set", result.stderr, 1, true)
        end)

        it("rejects an unknown setting", function()
            local path = config_copy({ mchidd = "1" })
            local result = run_tool("--config " .. q(path) .. " list --store-id 1234")
            assert.equals(2, result.status)
            assert.matches("unknown setting mchidd", result.stderr, 1, true)
        end)

        it("environment overrides the file", function()
            local path = config_copy({ base_url = "http://127.0.0.1:1" })
            local args = "--config " .. q(path) .. " list"
            local result = run_tool(args, { env = { WECHATPAY_BASE_URL = sandbox.base_url,
                WECHATPAY_STORE_ID = "1234" } })
            assert.equals(0, result.status, result.stderr)

            local unreachable = run_tool(args, { env = { WECHATPAY_STORE_ID = "1234" } })
            assert.equals(3, unreachable.status)
            assert.matches("network error", unreachable.stderr, 1, true)

            local other_merchant = tool("list --store-id 1234",
                { env = { WECHATPAY_MCHID = "1900000999" } })
            assert.equals(1, other_merchant.status)
        end)

        it("reads a Lua file at the default path", function()
            local xdg = helper.tmpdir()
            os.execute("mkdir -p " .. q(xdg .. "/wechatpay"))
            local c = sandbox.config
            helper.write(xdg .. "/wechatpay/config.lua", string.format([[
return {
    mchid = %q, serial_no = %q, private_key_file = %q, apiv3_key_file = "apiv3.key",
    base_url = %q, store_id = 1234,
}
]], c.mchid, c.serial_no, c.private_key_file, c.base_url), "600")
            helper.write(xdg .. "/wechatpay/apiv3.key", c.apiv3_key, "600")
            local result = run_tool("list", { xdg = xdg })
            assert.equals(0, result.status, result.stderr)
            assert.matches("no staff registered in store 1234", result.stderr, 1, true)
        end)

        it("never echoes a key given as a path", function()
            local key = sandbox.config.apiv3_key
            local pem = helper.read(sandbox.config.private_key_file)
            local body = pem:gsub("%-%-%-%-%-[^\n]*%-%-%-%-%-", ""):gsub("%s", "")
            local line = pem:match("\n([A-Za-z0-9+/=]+)\r?\n")
            local cases = {
                { WECHATPAY_APIV3_KEY_FILE = key },
                { WECHATPAY_PRIVATE_KEY_FILE = body },
                { WECHATPAY_PRIVATE_KEY_FILE = line },
            }
            for _, env in ipairs(cases) do
                local name, value = next(env)
                local result = tool("list --store-id 1234", { env = env })
                assert.equals(2, result.status, name)
                assert.is_nil(result.stderr:find(value, 1, true), name)
                assert.matches(string.format("the path given (%d bytes) cannot be read",
                    #value), result.stderr, 1, true)
                assert.matches("looks like a key rather than a file path", result.stderr,
                    1, true)
            end
        end)

        it("names a plain missing path", function()
            local path = helper.tmpdir() .. "/no-such.key"
            local result = tool("list --store-id 1234",
                { env = { WECHATPAY_PRIVATE_KEY_FILE = path } })
            assert.equals(2, result.status)
            assert.matches("private key file " .. path .. " cannot be read: No such file",
                result.stderr, 1, true)
            assert.is_nil(result.stderr:find("looks like a key", 1, true))
        end)

        it("hides a path with a space", function()
            local path = helper.tmpdir() .. "/my keys/apiv3.key"
            local result = tool("list --store-id 1234",
                { env = { WECHATPAY_PRIVATE_KEY_FILE = path } })
            assert.equals(2, result.status)
            assert.matches(string.format("private key file: the path given (%d bytes) "
                .. "cannot be read", #path), result.stderr, 1, true)
            assert.is_nil(result.stderr:find("my keys", 1, true))
        end)

        it("rejects paths that are not regular files", function()
            local dir = helper.tmpdir()
            local json_dir = dir .. "/x.json"
            os.execute("mkdir " .. q(json_dir))
            local key_dir_config = config_copy({ apiv3_key = false, mode = "certificate",
                apiv3_key_file = dir })
            local cases = {
                { "--config " .. q(key_dir_config) .. " certs", nil,
                    "APIv3 key file " .. dir .. " is a directory, not a regular file" },
                { "--config " .. q(dir) .. " list", nil,
                    "configuration file " .. dir .. " is a directory, not a regular file" },
                { "--config " .. q(json_dir) .. " list", nil,
                    "configuration file " .. json_dir .. " is a directory, not a regular file" },
                { "--config /dev/null list", nil,
                    "configuration file /dev/null is a character device, not a regular file" },
                { "--config " .. q(config_path) .. " list", { WECHATPAY_PRIVATE_KEY_FILE = "/tmp" },
                    "private key file /tmp is a directory, not a regular file" },
                { "--config " .. q(config_path) .. " list",
                    { WECHATPAY_PRIVATE_KEY_FILE = "/dev/null" },
                    "private key file /dev/null is a character device, not a regular file" },
            }
            for _, case in ipairs(cases) do
                local result = run_tool(case[1], { env = case[2] })
                assert.equals(2, result.status, case[3] .. "\n" .. result.stderr)
                assert.matches(case[3], result.stderr, 1, true)
                assert.is_nil(result.stderr:find("chmod", 1, true), case[3])
                assert.is_nil(result.stderr:find("traceback", 1, true), case[3])
                assert.is_nil(result.stderr:find("syntax error", 1, true), case[3])
            end
        end)

        it("stops a Lua configuration that runs too long", function()
            local path = helper.write(helper.tmpdir() .. "/config.lua", "while true do end\n",
                "600")
            local result = run_tool("--config " .. q(path) .. " list", { time_limit = 30 })
            assert.equals(2, result.status, result.stderr)
            assert.matches("configuration file " .. path .. " runs too long", result.stderr, 1,
                true)
        end)

        it("runs a Lua configuration without globals", function()
            local dir = helper.tmpdir()
            local with_global = helper.write(dir .. "/global.lua",
                "return { mchid = os.getenv('HOME') }\n", "600")
            local result = run_tool("--config " .. q(with_global) .. " list")
            assert.equals(2, result.status)
            assert.matches("error while running it on line 1", result.stderr, 1, true)

            -- The string methods remain reachable through the string metatable.
            local c = sandbox.config
            local with_method = helper.write(dir .. "/method.lua", string.format([[
return {
    mchid = (%q):rep(1), serial_no = %q, private_key_file = %q, apiv3_key = %q,
    base_url = %q, store_id = 1234,
}
]], c.mchid, c.serial_no, c.private_key_file, c.apiv3_key, c.base_url), "600")
            result = run_tool("--config " .. q(with_method) .. " list")
            assert.equals(0, result.status, result.stderr)
        end)

        it("sets the deadline from the timeout", function()
            local settings, sources = assert(config.load({ config = config_path,
                env = function() return nil end }))
            local options = assert(config.client_options(settings, sources))
            assert.is_nil(options.deadline)

            settings.timeout = 60
            options = assert(config.client_options(settings, sources))
            assert.equals(60, options.timeout)
            assert.equals(180, options.deadline)

            settings.timeout = 86400
            options = assert(config.client_options(settings, sources))
            assert.equals(86400, options.deadline)
        end)
    end)

    describe("sync", function()
        local HEADER = "store_id,corpid,userid,name,mobile,qr_code,avatar,group_qrcode"

        -- A staff file of count rows with a byte-order mark and CRLF line
        -- ends; every tenth name is quoted because it contains a comma.
        local function staff_csv(count)
            local lines = { "\239\187\191" .. HEADER }
            for i = 1, count do
                local name = i % 10 == 0 and ('"王, 小明' .. i .. '"') or ("员工" .. i)
                lines[#lines + 1] = string.format("1234,ww1,staff%03d,%s,139%08d,"
                    .. "https://q.example/%d,https://a.example/%d,", i, name, i, i, i)
            end
            return table.concat(lines, "\r\n") .. "\r\n"
        end

        local function write_csv(text)
            return helper.write(helper.tmpdir() .. "/staff.csv", text)
        end

        local function count_by_userid(list)
            local counts, distinct = {}, 0
            for _, guide in ipairs(list) do
                if not counts[guide.userid] then
                    distinct = distinct + 1
                end
                counts[guide.userid] = (counts[guide.userid] or 0) + 1
            end
            return counts, distinct
        end

        local function journal_events(path)
            local events = {}
            if not helper.exists(path) then
                return events
            end
            for line in helper.read(path):gmatch("([^\n]+)\n") do
                local record = core.json_decode(line)
                if type(record) == "table" and record.event then
                    events[#events + 1] = record
                end
            end
            return events
        end

        local function count_events(events, name)
            local n = 0
            for _, event in ipairs(events) do
                if event.event == name then
                    n = n + 1
                end
            end
            return n
        end

        local function rows_by_line(report)
            local by_line = {}
            for _, row in ipairs(report.rows) do
                by_line[row.line] = row
            end
            return by_line
        end

        it("registers 200 rows exactly once", function()
            local path = write_csv(staff_csv(200))
            local result = tool("sync " .. q(path) .. " --format json")
            assert.equals(0, result.status, result.stderr)
            local report = json_decode(result.stdout)
            assert.equals(200, report.summary.registered)
            assert.equals(0, report.summary.failed)
            assert.equals(200, #report.rows)
            assert.matches("^sync: line 2 userid staff001: registered LLA", result.stderr)

            local stored = guides()
            assert.equals(200, #stored)
            local counts, distinct = count_by_userid(stored)
            assert.equals(200, distinct)
            for userid, n in pairs(counts) do
                assert.equals(1, n, userid)
            end
            for _, guide in ipairs(stored) do
                if guide.userid == "staff010" then
                    assert.equals("王, 小明10", guide.name)
                    assert.equals("13900000010", guide.mobile)
                end
            end
            assert.is_true(helper.exists(path .. ".journal"))

            local again = tool("sync " .. q(path) .. " --format json --quiet")
            assert.equals(0, again.status, again.stderr)
            assert.equals(200, json_decode(again.stdout).summary.unchanged)
            assert.equals(200, #guides())
        end)

        it("dry run registers nothing but reads", function()
            local path = write_csv(staff_csv(3))
            local result = tool("sync " .. q(path) .. " --dry-run")
            assert.equals(0, result.status, result.stderr)
            assert.matches("would register", result.stdout, 1, true)
            assert.matches("dry run, nothing registered or updated: would be registered 3",
                result.stdout, 1, true)
            assert.equals(0, #guides())
            assert.is_false(helper.exists(path .. ".journal"))
            local methods = {}
            for _, entry in ipairs(sandbox.control("GET", "/sandbox/requests")) do
                methods[entry.method] = (methods[entry.method] or 0) + 1
            end
            assert.is_true((methods.GET or 0) > 0)
            assert.is_nil(methods.POST)
            assert.is_nil(methods.PATCH)
        end)

        it("matches registered userids ignoring case", function()
            sandbox.control("POST", "/sandbox/guides", { store_id = 1234, name = "张三",
                mobile = "13800000001", userid = "pii1" })
            local path = write_csv(HEADER .. "\n"
                .. "1234,ww1,PII1,张三,13800000001,https://q.example/1,https://a.example/1,\n")
            local result = tool("sync " .. q(path) .. " --format json")
            assert.equals(0, result.status, result.stderr)
            local row = json_decode(result.stdout).rows[1]
            assert.equals("updated", row.result)
            assert.equals(0, json_decode(result.stdout).summary.registered)
            assert.equals(0, json_decode(result.stdout).summary.not_in_file)
            local stored = guides()
            assert.equals(1, #stored)
            assert.equals("pii1", stored[1].userid)
            assert.equals("https://q.example/1", stored[1].qr_code)

            local again = tool("sync " .. q(path) .. " --format json")
            assert.equals(0, again.status, again.stderr)
            assert.equals("unchanged", json_decode(again.stdout).rows[1].result)
        end)

        it("updates changed rows and skips unchanged", function()
            local rows = {
                HEADER,
                "1234,ww1,u1,张三,13800000001,https://q.example/1,https://a.example/1,",
                "1234,ww1,u2,李四,13800000002,https://q.example/2,https://a.example/2,",
                "1234,ww1,u3,王五,13800000003,https://q.example/3,https://a.example/3,",
                "1234,ww1,u4,赵六,13800000004,https://q.example/4,https://a.example/4,",
            }
            -- u4 was registered by other means, so its URLs are not known.
            sandbox.control("POST", "/sandbox/guides", { store_id = 1234, name = "赵六",
                mobile = "13800000004", userid = "u4" })
            local path = write_csv(table.concat(rows, "\n", 1, 4) .. "\n")
            assert.equals(0, tool("sync " .. q(path)).status)

            rows[2] = "1234,ww1,u1,张三丰,13800000001,https://q.example/1,https://a.example/1,"
            rows[3] = "1234,ww1,u2,李四,13800000002,https://q.example/22,https://a.example/2,"
            helper.write(path, table.concat(rows, "\n") .. "\n")
            local result = tool("sync " .. q(path) .. " --format json")
            assert.equals(0, result.status, result.stderr)
            local by_line = rows_by_line(json_decode(result.stdout))
            assert.equals("updated", by_line[2].result)
            assert.equals("name", by_line[2].detail)
            assert.equals("updated", by_line[3].result)
            assert.equals("qr_code", by_line[3].detail)
            assert.equals("unchanged", by_line[4].result)
            assert.equals("updated", by_line[5].result)
            assert.matches("qr_code (last value sent not known)", by_line[5].detail, 1, true)

            local names = {}
            for _, guide in ipairs(guides()) do
                names[guide.userid] = guide
            end
            assert.equals("张三丰", names.u1.name)
            assert.equals("https://q.example/22", names.u2.qr_code)
            assert.equals("https://q.example/4", names.u4.qr_code)
        end)

        it("reports every bad row and does the good ones", function()
            local path = write_csv(table.concat({
                HEADER,
                "1234,ww1,good1,张三,13800000001,https://q.example/1,https://a.example/1,",
                '1234,ww1,good2,"Smith, John",13800000002,https://q.example/2,'
                    .. "https://a.example/2,https://g.example/2",
                "1234,ww1,good3,李四,+85291234567,https://q.example/3,https://a.example/3,",
                "1234,ww1,badmobile,王五,1380013,https://q.example/4,https://a.example/4,",
                "1234,ww1,longname," .. string.rep("长", 22)
                    .. ",13800000006,https://q.example/6,https://a.example/6,",
                "1234,ww1,short,赵六,13800000007",
                "1234,ww1,dup,钱七,13800000008,https://q.example/8,https://a.example/8,",
                "1234,ww1,DUP,孙八,13800000009,https://q.example/9,https://a.example/9,",
                "1234,ww1,emoji,笑\240\159\152\128,13800000010,https://q.example/10,"
                    .. "https://a.example/10,",
                "abc,ww1,badstore,周九,13800000011,https://q.example/11,https://a.example/11,",
                "9999,ww1,nostore,吴十,13800000012,https://q.example/12,https://a.example/12,",
                '1234,ww1,newline,"李\n四",13800000013,https://q.example/13,'
                    .. "https://a.example/13,",
                "1234,ww1,,郑一,13800000015,https://q.example/15,https://a.example/15,",
                "1234,ww1,badurl,冯二,13800000016,not-a-url,https://a.example/16,",
            }, "\n") .. "\n")
            -- The platform rejects the first registration.
            sandbox.control("POST", "/sandbox/faults", { fault = "status", status = 400,
                code = "INVALID_REQUEST", message = "请求参数不符合规则", method = "POST",
                path = "/v3/smartguide/guides" })

            local result = tool("sync " .. q(path) .. " --format json")
            assert.equals(1, result.status, result.stderr)
            local report = json_decode(result.stdout)
            assert.equals(14, #report.rows)
            local by_line = rows_by_line(report)
            local expected = {
                [2] = "INVALID_REQUEST: 请求参数不符合规则",
                [5] = "mobile is invalid",
                [6] = "name is too long: 66 bytes, at most 64",
                [7] = "missing column: the row has 5 fields, the header has 8",
                [8] = "duplicate userid dup in the file (lines 8, 9)",
                [9] = "duplicate userid DUP in the file (lines 8, 9)",
                [10] = "outside the Basic Multilingual Plane",
                [11] = "store_id is invalid",
                [12] = "PARAM_ERROR: 门店id不存在",
                [13] = "control character U+000A",
                [15] = "userid is empty",
                [16] = "qr_code is not an http:// or https:// URL",
            }
            for line, text in pairs(expected) do
                assert.equals("failed", by_line[line].result, "line " .. line)
                assert.matches(text, by_line[line].detail, 1, true)
            end
            assert.equals("registered", by_line[3].result)
            assert.equals("registered", by_line[4].result)
            assert.equals(2, report.summary.registered)
            assert.equals(12, report.summary.failed)
            assert.is_nil(result.stdout:find("1380013", 1, true))
            assert.matches("*****13", by_line[5].detail, 1, true)

            local stored = guides()
            assert.equals(2, #stored)
            local counts = count_by_userid(stored)
            assert.equals(1, counts.good2)
            assert.equals(1, counts.good3)
        end)

        it("shows personal data in row errors only on request", function()
            local path = write_csv(HEADER .. "\n1234,ww1,badmobile,王五,1380013,"
                .. "https://q.example/4,https://a.example/4,\n")
            local result = tool("sync " .. q(path) .. " --show-personal-data")
            assert.equals(1, result.status)
            assert.matches("(1380013)", result.stdout, 1, true)
        end)

        it("killed run resumes without registering twice", function()
            local path = write_csv(staff_csv(200))
            local journal_path = path .. ".journal"
            sandbox.control("POST", "/sandbox/faults", { fault = "delay", method = "POST",
                path = "/v3/smartguide/guides", seconds = 0.4, count = 1000 })
            local dir = helper.tmpdir()
            local pid = run_plain(string.format("lua5.4 bin/wechatpay-guide --config %s "
                .. "sync %s --quiet > %s 2>&1 & echo $!", q(config_path), q(path),
                q(dir .. "/log"))):match("%d+")

            local events = {}
            for _ = 1, 100 do
                events = journal_events(journal_path)
                if count_events(events, "done") >= 1 then
                    break
                end
                helper.sleep(0.05)
            end
            local second = tool("sync " .. q(path) .. " --quiet")
            assert.equals(2, second.status)
            assert.matches("in use by another wechatpay-guide sync", second.stderr, 1, true)

            -- Kills the run once three rows are done and one registration
            -- has been in flight for a while.
            local seen
            for _ = 1, 100 do
                events = journal_events(journal_path)
                local last = events[#events]
                if count_events(events, "done") >= 3 and last.event == "intent" then
                    if seen == #events then
                        break
                    end
                    seen = #events
                else
                    seen = nil
                end
                helper.sleep(0.1)
            end
            os.execute("kill -9 " .. pid)
            -- The sandbox carries out the delayed request all the same.
            helper.sleep(0.6)
            sandbox.control("DELETE", "/sandbox/faults")

            events = journal_events(journal_path)
            local in_flight = events[#events]
            assert.equals("intent", in_flight.event)
            local done = count_events(events, "done")
            local before = guides()
            assert.equals(done + 1, #before)

            local resumed = tool("sync " .. q(path) .. " --quiet --format json")
            assert.equals(0, resumed.status, resumed.stderr)
            local report = json_decode(resumed.stdout)
            assert.equals(200 - #before, report.summary.registered)
            assert.equals(#before, report.summary.unchanged)
            for _, row in ipairs(report.rows) do
                if row.userid == in_flight.userid then
                    assert.equals("unchanged", row.result)
                    assert.matches("registered by an earlier run", row.detail, 1, true)
                end
            end

            local stored = guides()
            assert.equals(200, #stored)
            local counts, distinct = count_by_userid(stored)
            assert.equals(200, distinct)
            for userid, n in pairs(counts) do
                assert.equals(1, n, userid)
            end
        end)

        it("interrupted run reports the rows left", function()
            local path = write_csv(staff_csv(20))
            sandbox.control("POST", "/sandbox/faults", { fault = "delay", method = "POST",
                path = "/v3/smartguide/guides", seconds = 0.3, count = 1000 })
            local dir = helper.tmpdir()
            -- The subshell records the process ID and the exit status.  Its
            -- own output goes to /dev/null, so that run_plain does not wait
            -- for it.
            run_plain(string.format("(lua5.4 bin/wechatpay-guide --config %s sync %s "
                .. "--quiet --format json > %s 2> %s & echo $! > %s; wait $!; echo $? > %s) "
                .. "> /dev/null 2>&1 &", q(config_path), q(path), q(dir .. "/out"),
                q(dir .. "/err"), q(dir .. "/pid"), q(dir .. "/status")))
            for _ = 1, 100 do
                if count_events(journal_events(path .. ".journal"), "done") >= 2 then
                    break
                end
                helper.sleep(0.05)
            end
            local pid = helper.read(dir .. "/pid"):match("%d+")
            os.execute("kill -INT " .. pid)
            for _ = 1, 100 do
                if helper.exists(dir .. "/status") then
                    break
                end
                helper.sleep(0.05)
            end
            sandbox.control("DELETE", "/sandbox/faults")

            assert.equals("130\n", helper.read(dir .. "/status"))
            assert.matches("interrupted; the journal", helper.read(dir .. "/err"), 1, true)
            local report = json_decode(helper.read(dir .. "/out"))
            assert.is_true(report.summary.interrupted)
            assert.equals(20, #report.rows)
            local by_result = {}
            for _, row in ipairs(report.rows) do
                local key = row.result .. ": " .. (row.detail or "")
                by_result[key] = (by_result[key] or 0) + 1
            end
            assert.equals(1, by_result["failed: interrupted while being processed; the next "
                .. "run checks its outcome"])
            assert.is_true((by_result["failed: not attempted: interrupted"] or 0) > 0)
            assert.is_true((by_result["registered: "] or 0) >= 2)

            -- The next run settles the interrupted row through the journal.
            local resumed = tool("sync " .. q(path) .. " --quiet --format json")
            assert.equals(0, resumed.status, resumed.stderr)
            local stored = guides()
            assert.equals(20, #stored)
            local counts, distinct = count_by_userid(stored)
            assert.equals(20, distinct)
            for userid, n in pairs(counts) do
                assert.equals(1, n, userid)
            end
        end)

        it("draws a progress bar on a terminal", function()
            local path = write_csv(staff_csv(3))
            local out = run_plain(string.format("script -qec %s /dev/null < /dev/null",
                q("lua5.4 bin/wechatpay-guide --config " .. q(config_path) .. " sync "
                    .. q(path))))
            assert.matches("\r[" .. string.rep("#", 30) .. "] 3/3", out, 1, true)
            assert.matches("registered 3, updated 0, unchanged 0, failed 0", out, 1, true)
        end)

        it("stops with status 3 when the platform is unreachable", function()
            local path = write_csv(staff_csv(3))
            local result = tool("sync " .. q(path),
                { env = { WECHATPAY_BASE_URL = "http://127.0.0.1:1" } })
            assert.equals(3, result.status)
            assert.matches("nothing was sent", result.stderr, 1, true)
        end)

        it("rejects a file that is not its journal", function()
            local path = write_csv(staff_csv(3))
            local result = tool("sync " .. q(path) .. " --journal " .. q(path))
            assert.equals(2, result.status)
            assert.matches("is not a wechatpay-guide sync journal", result.stderr, 1, true)
            assert.equals(0, #guides())
        end)

        it("rejects a header without a required column", function()
            local path = write_csv("userid,name,mobile,avatar\nu1,张三,13800000001,https://a/1\n")
            local result = tool("sync " .. q(path) .. " --store-id 1234 --corpid ww1")
            assert.equals(2, result.status)
            assert.matches("the header has no column qr_code", result.stderr, 1, true)
        end)
    end)

    describe("failures", function()
        it("unverified response exits 4", function()
            sandbox.control("POST", "/sandbox/faults", { fault = "bad_signature",
                method = "GET", path = "/v3/smartguide/guides" })
            local result = tool("list --store-id 1234")
            assert.equals(4, result.status)
            assert.matches("verify error", result.stderr, 1, true)
        end)

        it("rate limit answer is retried", function()
            sandbox.control("POST", "/sandbox/faults", { fault = "status", status = 429,
                method = "GET", path = "/v3/smartguide/guides" })
            local result = tool("list --store-id 1234")
            assert.equals(0, result.status, result.stderr)
            assert.equals(0, #sandbox.control("GET", "/sandbox/faults"))
        end)

        it("register leaves 429 retries to the library", function()
            local function arm_rate_limit()
                sandbox.control("POST", "/sandbox/reset")
                sandbox.control("POST", "/sandbox/faults", { fault = "status", status = 429,
                    method = "POST", path = "^/v3/smartguide/guides$", count = 100 })
            end
            local function count_registrations()
                local n = 0
                for _, entry in ipairs(sandbox.control("GET", "/sandbox/requests")) do
                    if entry.method == "POST" and entry.target == "/v3/smartguide/guides" then
                        n = n + 1
                    end
                end
                return n
            end

            -- The attempts that the library alone makes.
            arm_rate_limit()
            local client = assert(wechatpay.new(helper.client_options(sandbox)))
            local guide, err = client:register_guide({ store_id = 1234, corpid = "ww1",
                userid = "limited", name = "张三", mobile = "13800138000",
                qr_code = "https://q.example/1", avatar = "https://a.example/1" })
            client:close()
            assert.is_nil(guide)
            assert.equals(429, err.status)
            local library_attempts = count_registrations()

            arm_rate_limit()
            local result = tool("register --store-id 1234 --userid limited --name 张三 "
                .. "--mobile 13800138000 " .. REGISTER_ARGS)
            assert.equals(1, result.status, result.stderr)
            assert.matches("registration failed: .*RATELIMIT_EXCEEDED", result.stderr)
            assert.equals(library_attempts, count_registrations())
            assert.equals(0, #guides())
        end)
    end)
end)
