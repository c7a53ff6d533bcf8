-- CSV as RFC 4180 defines it: comma-separated fields, double-quoted
-- fields that may contain commas, doubled quotes and line breaks, and
-- records ending in CRLF or LF.  A UTF-8 byte-order mark before the
-- first record is dropped.
local concat = table.concat

local _M = {}

local BOM = "\239\187\191"

-- Counts the line feeds in text[first..last].
local function count_newlines(text, first, last)
    local n = 0
    local pos = text:find("\n", first, true)
    while pos and pos <= last do
        n = n + 1
        pos = text:find("\n", pos + 1, true)
    end
    return n
end

-- Reads the quoted field that starts at text[pos] (the opening quote).
-- Returns the value and the position after the closing quote, or nil
-- and a message.
local function quoted_field(text, pos, line)
    local parts = {}
    local i = pos + 1
    while true do
        local quote = text:find('"', i, true)
        if not quote then
            return nil, string.format("line %d: a quoted field is not closed before the end "
                .. "of the file", line)
        end
        parts[#parts + 1] = text:sub(i, quote - 1)
        if text:sub(quote + 1, quote + 1) ~= '"' then
            return concat(parts), quote + 1
        end
        parts[#parts + 1] = '"'
        i = quote + 2
    end
end

-- Reads one record that starts at text[pos].  Returns the record
-- { fields, line, blank } and the position after it, or nil and a message.
local function read_record(text, pos, line)
    local fields = {}
    local start_line = line
    local any_quoted = false
    while true do
        if text:sub(pos, pos) == '"' then
            local value, after = quoted_field(text, pos, start_line)
            if not value then
                return nil, after
            end
            line = line + count_newlines(text, pos, after - 1)
            fields[#fields + 1] = value
            any_quoted = true
            pos = after
            local next_char = text:sub(pos, pos)
            if next_char == "," then
                pos = pos + 1
            elseif next_char == "\r" or next_char == "\n" or next_char == "" then
                break
            else
                return nil, string.format("line %d: unexpected %q after a closing quote; "
                    .. "a quote inside a quoted field must be doubled (\"\")", line, next_char)
            end
        else
            local stop = text:find("[,\r\n]", pos)
            fields[#fields + 1] = text:sub(pos, (stop or #text + 1) - 1)
            if stop and text:sub(stop, stop) == "," then
                pos = stop + 1
            else
                pos = stop or #text + 1
                break
            end
        end
    end
    if text:sub(pos, pos + 1) == "\r\n" then
        pos = pos + 2
    elseif pos <= #text then
        pos = pos + 1
    end
    local record = {
        fields = fields,
        line = start_line,
        blank = #fields == 1 and fields[1] == "" and not any_quoted,
    }
    return record, pos, line + 1
end

-- Parses CSV text.  Returns a list of records { fields = { ... }, line =
-- the line number where the record starts, blank = true for an empty
-- line }, or nil and a message naming the line of a malformed record.
function _M.parse(text)
    local pos = 1
    if text:sub(1, #BOM) == BOM then
        pos = #BOM + 1
    end
    local records = {}
    local line = 1
    while pos <= #text do
        local record, after, next_line = read_record(text, pos, line)
        if not record then
            return nil, after
        end
        records[#records + 1] = record
        pos, line = after, next_line
    end
    return records
end

-- Returns a field as CSV: quoted when it contains a comma, a quote, a
-- line break or leading or trailing spaces.
function _M.field(value)
    local s = value == nil and "" or tostring(value)
    if s:find('[,"\r\n]') or s:find("^%s") or s:find("%s$") then
        return '"' .. s:gsub('"', '""') .. '"'
    end
    return s
end

-- Returns one CSV record (without the line ending) from a list of values.
function _M.record(values, count)
    local out = {}
    for i = 1, count or #values do
        out[i] = _M.field(values[i])
    end
    return concat(out, ",")
end

return _M
