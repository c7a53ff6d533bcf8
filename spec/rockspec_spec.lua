-- The rockspec: it lists every module, and `luarocks make` builds and
-- installs a tree that works on its own, offline.
local helper = require("helper")

local ROCKSPEC = "rockspec/lua-wechatpay-0.1.0-1.rockspec"

local function load_rockspec()
    local spec = {}
    local chunk = assert(loadfile(ROCKSPEC, "t", spec))
    chunk()
    return spec
end

describe("rockspec", function()
    teardown(helper.cleanup)

    it("lists every Lua module under lua/", function()
        local modules = load_rockspec().build.modules
        local listed = {}
        for name, source in pairs(modules) do
            if type(source) == "string" then
                listed[source] = name
            end
        end
        local files = helper.run("find lua -name '*.lua' | sort")
        local count = 0
        for path in files:gmatch("[^\n]+") do
            count = count + 1
            local expected = path:gsub("^lua/", ""):gsub("%.lua$", ""):gsub("/init$", "")
                :gsub("/", ".")
            assert.equals(expected, listed[path], path .. " is not in the rockspec")
        end
        assert.is_true(count > 5)
    end)

    it("builds the C module from every csrc/ source", function()
        local sources = load_rockspec().build.modules["wechatpay.core"].sources
        local listed = {}
        for _, path in ipairs(sources) do
            listed[path] = true
        end
        for path in helper.run("ls csrc/*.c"):gmatch("[^\n]+") do
            assert.is_true(listed[path] == true, path .. " is not in the rockspec")
        end
    end)

    it("installs with luarocks make into a tree that loads", function()
        local dir = helper.tmpdir()
        local copy = dir .. "/src"
        local tree = dir .. "/tree"
        -- Build in a copy, because luarocks make writes objects beside the
        -- sources.
        local _, copied = helper.run(string.format(
            "mkdir -p %s && tar --exclude=./build --exclude=./build-asan -cf - . "
            .. "| tar -C %s -xf -", helper.shell_quote(copy), helper.shell_quote(copy)))
        assert.is_true(copied)

        local out, built = helper.run(string.format(
            "cd %s && luarocks --lua-version 5.4 --tree %s make %s 2>&1",
            helper.shell_quote(copy), helper.shell_quote(tree), ROCKSPEC))
        assert.is_true(built, out)

        -- A fresh interpreter that sees only the installed tree.
        local script = "local w = require('wechatpay'); local c = require('wechatpay.core'); "
            .. "assert(package.searchpath('wechatpay.core', package.cpath):find(TREE, 1, true)); "
            .. "io.write(w._VERSION, ' ', c.json_encode({ok = true}))"
        local command = string.format("cd / && LUA_PATH=%s LUA_CPATH=%s lua5.4 -e %s 2>&1",
            helper.shell_quote(tree .. "/share/lua/5.4/?.lua;" .. tree
                .. "/share/lua/5.4/?/init.lua"),
            helper.shell_quote(tree .. "/lib/lua/5.4/?.so"),
            helper.shell_quote("TREE = " .. string.format("%q", tree) .. "; " .. script))
        local loaded, ok = helper.run(command)
        assert.is_true(ok, loaded)
        assert.equals("0.1.0 {\"ok\":true}", loaded)
        assert.is_true(helper.exists(tree .. "/bin/wechatpay-sandbox"))
    end)
end)
