-- Output of wechatpay-guide: an aligned table for people (CJK text takes
-- two columns), CSV and JSON for scripts, and the masks that hide names
-- and mobiles unless --show-personal-data is given.
local csv = require("wechatpay.cli.csv")
local json = require("dkjson")

local concat = table.concat

local _M = {}

_M.FORMATS = { "table", "csv", "json" }

-- Characters that a terminal shows two columns wide: the main blocks of
-- the East Asian Wide and Fullwidth classes of Unicode (UAX #11) and the
-- common emoji blocks.  Rarer wide characters count as one column.
local WIDE_RANGES = {
    { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x23E9, 0x23EC },
    { 0x2E80, 0x303E }, { 0x3041, 0x33FF }, { 0x3400, 0x4DBF }, { 0x4E00, 0x9FFF },
    { 0xA000, 0xA4CF }, { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF },
    { 0xFE10, 0xFE19 }, { 0xFE30, 0xFE6F }, { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 },
    { 0x1F300, 0x1F64F }, { 0x1F900, 0x1F9FF }, { 0x20000, 0x3FFFD },
}

-- Characters that take no column: combining marks, zero-width spaces and
-- joiners, and variation selectors.
local ZERO_RANGES = {
    { 0x0300, 0x036F }, { 0x200B, 0x200F }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F },
    { 0xFE20, 0xFE2F },
}

local function in_ranges(ranges, c)
    for _, range in ipairs(ranges) do
        if c < range[1] then
            return false
        end
        if c <= range[2] then
            return true
        end
    end
    return false
end

-- Returns the number of terminal columns that the UTF-8 string s takes.
function _M.display_width(s)
    local width = 0
    for _, c in utf8.codes(s) do
        if in_ranges(WIDE_RANGES, c) then
            width = width + 2
        elseif not in_ranges(ZERO_RANGES, c) then
            width = width + 1
        end
    end
    return width
end

-- Returns s safe to show on a terminal: control characters and bytes
-- that are not UTF-8 become \xHH, so that text from a file or the
-- platform can neither move the cursor nor break the alignment.
function _M.printable(s)
    s = tostring(s)
    if utf8.len(s) then
        return (s:gsub("[%c\127]", function(c)
            return string.format("\\x%02X", c:byte())
        end):gsub("\194([\128-\159])", function(c)
            return string.format("\\u%04X", c:byte())
        end))
    end
    return (s:gsub("[^\32-\126]", function(c)
        return string.format("\\x%02X", c:byte())
    end))
end

-- Masks a name: the first character stays and each other becomes *
-- (张三 becomes 张*).  A one-character name becomes *.
function _M.mask_name(name)
    if type(name) ~= "string" or name == "" then
        return name
    end
    local count = utf8.len(name)
    if not count then
        return "*"
    end
    if count == 1 then
        return "*"
    end
    local second = utf8.offset(name, 2)
    return name:sub(1, second - 1) .. string.rep("*", count - 1)
end

-- Masks a mobile number: 13800138000 becomes 138****8000.  Numbers of 8
-- or more characters keep the first 3 and the last 4; shorter ones keep
-- only the last 2.
function _M.mask_mobile(mobile)
    if type(mobile) ~= "string" or mobile == "" then
        return mobile
    end
    local n = #mobile
    if n >= 8 then
        return mobile:sub(1, 3) .. string.rep("*", n - 7) .. mobile:sub(-4)
    end
    if n > 2 then
        return string.rep("*", n - 2) .. mobile:sub(-2)
    end
    return string.rep("*", n)
end

-- Returns a copy of guide with name and mobile masked, unless show is set.
function _M.personal(guide, show)
    local copy = {}
    for key, value in pairs(guide) do
        copy[key] = value
    end
    if not show then
        copy.name = _M.mask_name(copy.name)
        copy.mobile = _M.mask_mobile(copy.mobile)
    end
    return copy
end

local function cell_text(value)
    if value == nil then
        return ""
    end
    return _M.printable(value)
end

-- Renders rows as a table: one header line of the column names, then
-- one line per row, each column as wide as its widest cell plus two
-- spaces.  The last column is not padded.
local function render_table(rows, columns)
    local widths = {}
    local cells = {}
    for i, column in ipairs(columns) do
        widths[i] = _M.display_width(column)
    end
    for r, row in ipairs(rows) do
        cells[r] = {}
        for i, column in ipairs(columns) do
            local text = cell_text(row[column])
            cells[r][i] = text
            widths[i] = math.max(widths[i], _M.display_width(text))
        end
    end
    local lines = {}
    local function add_line(texts)
        local parts = {}
        for i, text in ipairs(texts) do
            if i < #texts then
                text = text .. string.rep(" ", widths[i] - _M.display_width(text) + 2)
            end
            parts[i] = text
        end
        lines[#lines + 1] = (concat(parts):gsub("%s+$", ""))
    end
    add_line(columns)
    for _, row_cells in ipairs(cells) do
        add_line(row_cells)
    end
    return concat(lines, "\n") .. "\n"
end

local function render_csv(rows, columns)
    local lines = { csv.record(columns) }
    for _, row in ipairs(rows) do
        local values = {}
        for i, column in ipairs(columns) do
            values[i] = row[column]
        end
        lines[#lines + 1] = csv.record(values, #columns)
    end
    return concat(lines, "\n") .. "\n"
end

-- Returns value as JSON text, with the keys of objects in the order of
-- key_order and nil fields of rows as null.
function _M.json(value, key_order)
    return json.encode(value, { keyorder = key_order })
end

local function render_json(rows, columns)
    local list = {}
    for r, row in ipairs(rows) do
        local object = {}
        for _, column in ipairs(columns) do
            local v = row[column]
            if v == nil then
                v = json.null
            end
            object[column] = v
        end
        list[r] = object
    end
    return _M.json(setmetatable(list, { __jsontype = "array" }), columns) .. "\n"
end

-- Returns rows (tables keyed by column name) rendered in format: table,
-- csv or json.  An empty table is the empty string, so that callers can
-- print a message instead.
function _M.render(rows, columns, format)
    if format == "csv" then
        return render_csv(rows, columns)
    elseif format == "json" then
        return render_json(rows, columns)
    end
    if #rows == 0 then
        return ""
    end
    return render_table(rows, columns)
end

return _M
