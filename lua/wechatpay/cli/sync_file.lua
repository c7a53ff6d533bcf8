-- Reads the CSV file of `wechatpay-guide sync` into rows and checks each
-- one.  The header row names the columns.  A row with a problem keeps
-- the list of its problems, so that the report shows every bad row with
-- its reasons while the good rows are still processed.
local calls = require("wechatpay.cli.calls")
local csv = require("wechatpay.cli.csv")
local fields = require("wechatpay.cli.fields")
local output = require("wechatpay.cli.output")

local _M = {}

-- The columns a file may have, in the order the report names them.
_M.COLUMNS = { "store_id", "corpid", "userid", "name", "mobile", "qr_code", "avatar",
    "group_qrcode" }

local KNOWN = {}
for _, name in ipairs(_M.COLUMNS) do
    KNOWN[name] = true
end

-- Columns that must be present; store_id and corpid may instead come
-- from --store-id and --corpid (or the configuration).
local ALWAYS_REQUIRED = { "userid", "name", "mobile", "qr_code", "avatar" }

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- Reads and checks the header record.  Returns the list of column names
-- (nil for an ignored column), or nil and a message.
local function read_header(record, opts)
    local columns = {}
    local seen = {}
    for i, raw in ipairs(record.fields) do
        local name = trim(raw):lower()
        if name == "" then
            return nil, string.format("the header (line %d) has an empty column name in "
                .. "column %d", record.line, i)
        end
        if seen[name] then
            return nil, string.format("the header names the column %s twice", name)
        end
        seen[name] = true
        if KNOWN[name] then
            columns[i] = name
        elseif not opts.extra_columns then
            return nil, string.format("unknown column %s in the header; the columns are %s "
                .. "(--extra-columns ignores others)", output.printable(name),
                table.concat(_M.COLUMNS, ", "))
        end
    end
    local missing = {}
    for _, name in ipairs(ALWAYS_REQUIRED) do
        if not seen[name] then
            missing[#missing + 1] = name
        end
    end
    if not seen.store_id and not opts.store_id then
        missing[#missing + 1] = "store_id (or --store-id)"
    end
    if not seen.corpid and not opts.corpid then
        missing[#missing + 1] = "corpid (or --corpid)"
    end
    if #missing > 0 then
        return nil, "the header has no column " .. table.concat(missing, ", ")
    end
    return columns, #record.fields
end

-- Builds a row from a record: values by column name, trimmed, with the
-- defaults for store_id and corpid, and the row's problems.
local function read_row(record, columns, width, opts)
    local row = { line = record.line, values = {}, problems = {} }
    local count = #record.fields
    if count < width then
        local absent = {}
        for i = count + 1, width do
            absent[#absent + 1] = columns[i] or ("column " .. i)
        end
        row.problems[#row.problems + 1] = string.format("missing column: the row has %d "
            .. "fields, the header has %d (no %s)", count, width, table.concat(absent, ", "))
    elseif count > width then
        row.problems[#row.problems + 1] = string.format("the row has %d fields, the header "
            .. "has only %d", count, width)
    end
    for i, name in pairs(columns) do
        local value = record.fields[i]
        if value then
            row.values[name] = trim(value)
        end
    end
    local v = row.values
    if (v.store_id or "") == "" then
        v.store_id = opts.store_id and tostring(opts.store_id) or nil
    end
    if (v.corpid or "") == "" then
        v.corpid = opts.corpid
    end
    row.userid = v.userid ~= "" and v.userid or nil
    return row
end

-- Checks the values of a row that has all its fields.
local function check_row(row, opts)
    local v = row.values
    local store_id, problem = fields.store_id(v.store_id or "")
    if v.store_id == nil then
        problem = "store_id is empty"
    end
    if store_id then
        row.store_id = store_id
    else
        row.problems[#row.problems + 1] = problem
    end
    for _, name in ipairs({ "corpid", "userid", "name", "mobile", "qr_code", "avatar" }) do
        problem = fields.problem(name, v[name], opts.show_personal_data)
        if problem then
            row.problems[#row.problems + 1] = problem
        end
    end
    if (v.group_qrcode or "") ~= "" then
        problem = fields.problem("group_qrcode", v.group_qrcode, opts.show_personal_data)
        if problem then
            row.problems[#row.problems + 1] = problem
        end
    else
        v.group_qrcode = nil
    end
end

-- Marks every row whose userid occurs more than once in a store.  The
-- comparison ignores case, as WeCom's does (see calls.userid_key), so
-- userids that differ only in case are one person entered twice.  No copy is sent, because the
-- file does not say which one is right.
local function mark_duplicates(rows)
    local groups = {}
    for _, row in ipairs(rows) do
        if row.userid then
            local key = (row.values.store_id or "") .. "/" .. calls.userid_key(row.userid)
            groups[key] = groups[key] or {}
            table.insert(groups[key], row)
        end
    end
    for _, group in pairs(groups) do
        if #group > 1 then
            local lines = {}
            for i, row in ipairs(group) do
                lines[i] = tostring(row.line)
            end
            local list = table.concat(lines, ", ")
            for _, row in ipairs(group) do
                row.problems[#row.problems + 1] = string.format("duplicate userid %s in the "
                    .. "file (lines %s); none of them is sent", output.printable(row.userid),
                    list)
            end
        end
    end
end

-- Reads the file at path.  opts: store_id, corpid (defaults),
-- extra_columns, show_personal_data.  Returns the rows (each { line,
-- values, problems, store_id, userid }) and the number of blank lines
-- skipped, or nil and a message.
function _M.read(path, opts)
    local f, err = io.open(path, "rb")
    if not f then
        return nil, "cannot read " .. tostring(err)
    end
    local text = f:read("a")
    f:close()
    local records
    records, err = csv.parse(text)
    if not records then
        return nil, path .. ": " .. err
    end
    local first = 1
    while records[first] and records[first].blank do
        first = first + 1
    end
    if not records[first] then
        return nil, path .. " is empty; its first row must name the columns"
    end
    local columns, width = read_header(records[first], opts)
    if not columns then
        return nil, path .. ": " .. width
    end
    local rows = {}
    local blank = 0
    for i = first + 1, #records do
        local record = records[i]
        if record.blank then
            blank = blank + 1
        else
            local row = read_row(record, columns, width, opts)
            if #row.problems == 0 then
                check_row(row, opts)
            end
            rows[#rows + 1] = row
        end
    end
    mark_duplicates(rows)
    return rows, blank
end

return _M
