-- Usage: lua5.4 tools/scan-secrets.lua DIR
-- Checks DIR/captured (everything the library said during a test run)
-- for every secret in DIR/needles (see spec/support/secrets.lua).  Prints
-- each hit by kind and line, never the secret itself; exits 1 on a hit,
-- and 2 when nothing was recorded (the scan would prove nothing).
local dir = assert(arg[1], "usage: scan-secrets.lua DIR")

local function read(path)
    local f = io.open(path, "rb")
    if not f then
        return nil
    end
    local data = f:read("a")
    f:close()
    return data
end

local function unhex(h)
    return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end))
end

local needles_text, captured = read(dir .. "/needles"), read(dir .. "/captured")
if not needles_text or not captured then
    print("scan-secrets: nothing recorded in " .. dir)
    os.exit(2)
end

local needles, kinds = {}, {}
for kind, value in needles_text:gmatch("(%S+)\t(%x+)\n") do
    local secret = unhex(value)
    if not needles[secret] then
        needles[secret] = kind
        kinds[kind] = (kinds[kind] or 0) + 1
    end
end

-- Authorization headers are found by their form too, whatever recorded.
local hits = 0
local function report(kind, at)
    local line = select(2, captured:sub(1, at):gsub("\n", "")) + 1
    print(string.format("scan-secrets: a %s appears in captured output line %d", kind, line))
    hits = hits + 1
end

local at = captured:find("WECHATPAY2-SHA256-RSA2048 mchid=", 1, true)
if at then
    report("authorization", at)
end
for secret, kind in pairs(needles) do
    local found = captured:find(secret, 1, true)
    if found then
        report(kind, found)
    end
end

local summary = {}
for kind, n in pairs(kinds) do
    summary[#summary + 1] = n .. " " .. kind
end
table.sort(summary)
print(string.format("scan-secrets: %d secrets (%s) checked against %d bytes of output",
    #summary > 0 and select(2, needles_text:gsub("\n", "")) or 0,
    table.concat(summary, ", "), #captured))
os.exit(hits == 0 and 0 or 1)
