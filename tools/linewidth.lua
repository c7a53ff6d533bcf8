-- Usage: lua5.4 tools/linewidth.lua MAX FILE...
-- Prints each line wider than MAX display columns (a CJK character takes
-- two) and exits 1 when there is one.
local max = assert(tonumber(arg[1]), "MAX must be a number")

-- East Asian wide ranges that occur in this project's text.
local function is_wide(c)
    return (c >= 0x1100 and c <= 0x115F) or (c >= 0x2E80 and c <= 0xA4CF)
        or (c >= 0xAC00 and c <= 0xD7A3) or (c >= 0xF900 and c <= 0xFAFF)
        or (c >= 0xFE30 and c <= 0xFE4F) or (c >= 0xFF00 and c <= 0xFF60)
        or (c >= 0xFFE0 and c <= 0xFFE6)
end

local status = 0
for i = 2, #arg do
    local n = 0
    for line in io.lines(arg[i]) do
        n = n + 1
        local width = 0
        local ok = pcall(function()
            for _, c in utf8.codes(line, true) do
                width = width + (is_wide(c) and 2 or 1)
            end
        end)
        if not ok then
            width = #line
        end
        if width > max then
            print(string.format("%s:%d: line wider than %d columns", arg[i], n, max))
            status = 1
        end
    end
end
os.exit(status)
