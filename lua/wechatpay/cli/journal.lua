-- The journal of `wechatpay-guide sync`: a file of JSON lines that
-- records each call before it is sent (intent) and its result after
-- (done, failed or unknown).  A run that is killed leaves an intent
-- without a result.  The next run reads it and queries the platform for
-- that staff member before registering again.
--
-- Each record is written with one write and flushed to the operating
-- system at once, so it survives the process being killed.
-- NOTE: Lua has no fsync, so a power loss can still lose the last
-- records.  The next run then finds those staff through the platform's
-- query, as it finds every registered staff member.
--
-- The first line identifies the merchant, sub-merchant and base URL; a
-- journal written for another merchant or platform is rejected.
-- The other records carry store_id and userid, which identify a row.
-- "sent" holds the qr_code, avatar and group_qrcode values sent,
-- because the platform's query does not return them.  Names and mobiles
-- are never written.
local calls = require("wechatpay.cli.calls")
local lfs = require("lfs")
local json = require("dkjson")

local _M = {}
local mt = { __index = _M }

local MAGIC = "wechatpay-guide sync journal"
local VERSION = 1
local KEY_ORDER = {
    "journal", "version", "mchid", "sub_mchid", "base_url", "created",
    "time", "event", "action", "store_id", "userid", "line", "guide_id", "fields", "sent",
    "resolved", "error",
}

local function now()
    return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

-- Returns the key of a row: its store and userid, compared ignoring case
-- as sync compares userids.
function _M.key(store_id, userid)
    return tostring(store_id) .. "/" .. calls.userid_key(userid)
end

-- Folds one record into the states by key.  A state is { guide_id,
-- sent = { field = value }, pending = the intent without a result }.
local function fold(states, record)
    local key = _M.key(record.store_id, record.userid)
    local state = states[key] or { sent = {} }
    states[key] = state
    local event = record.event
    if event == "intent" then
        state.pending = record
    elseif event == "done" then
        local carried = record.sent or (state.pending and state.pending.sent) or {}
        for field, value in pairs(carried) do
            state.sent[field] = value
        end
        if record.guide_id then
            state.guide_id = record.guide_id
        end
        state.pending = nil
    elseif event == "failed" then
        state.pending = nil
    end
    -- "unknown" keeps the intent pending.
end

local function same(a, b)
    return (a or json.null) == (b or json.null)
end

-- Parses the existing journal text.  Returns the states and a list of
-- warnings, or nil and a message.
local function parse(path, text, identity)
    local states, warnings = {}, {}
    local number = 0
    local header
    for line in text:gmatch("([^\n]*)\n?") do
        number = number + 1
        if line ~= "" then
            local record = json.decode(line)
            if number == 1 then
                if type(record) ~= "table" or record.journal ~= MAGIC then
                    return nil, string.format("%s is not a wechatpay-guide sync journal; "
                        .. "choose another path with --journal", path)
                end
                header = record
            elseif type(record) ~= "table" or not record.event or not record.userid then
                warnings[#warnings + 1] = string.format("journal %s line %d is incomplete, "
                    .. "probably written when an earlier run was killed; it is ignored",
                    path, number)
            else
                fold(states, record)
            end
        end
    end
    if header then
        if header.version ~= VERSION then
            return nil, string.format("journal %s has version %s; this wechatpay-guide "
                .. "reads version %d", path, tostring(header.version), VERSION)
        end
        for _, name in ipairs({ "mchid", "sub_mchid", "base_url" }) do
            if not same(header[name], identity[name]) then
                return nil, string.format("journal %s was written for %s %s, not %s; use "
                    .. "another --journal path", path, name, tostring(header[name]),
                    tostring(identity[name]))
            end
        end
    end
    return states, warnings, header ~= nil
end

-- Opens the journal at path.  identity: { mchid, sub_mchid, base_url }.
-- With read_only (for --dry-run) nothing is written or locked.
-- Returns the journal and a list of warnings, or nil and a message.
function _M.open(path, identity, read_only)
    local text = ""
    local existing = io.open(path, "rb")
    if existing then
        text = existing:read("a") or ""
        existing:close()
    end
    local states, warnings, has_header = parse(path, text, identity)
    if not states then
        return nil, warnings
    end
    local self = setmetatable({ path = path, states = states }, mt)
    if read_only then
        return self, warnings
    end

    local file, err = io.open(path, "ab")
    if not file then
        return nil, "cannot open the journal: " .. tostring(err)
    end
    -- A lock held by another running sync makes this one stop, so two runs
    -- never register the same rows.  The lock ends with the process.
    local locked = lfs.lock(file, "w")
    if not locked then
        file:close()
        return nil, string.format("journal %s is in use by another wechatpay-guide sync; "
            .. "wait for it to finish", path)
    end
    self.file = file
    if text ~= "" and text:sub(-1) ~= "\n" then
        -- Ends the line that a killed run left incomplete.
        file:write("\n")
    end
    if not has_header then
        local ok
        ok, err = self:write({
            journal = MAGIC, version = VERSION, mchid = identity.mchid,
            sub_mchid = identity.sub_mchid, base_url = identity.base_url, created = now(),
        })
        if not ok then
            file:close()
            return nil, err
        end
    end
    return self, warnings
end

-- Appends one record and flushes it.  Returns true or nil and a message.
function _M:write(record)
    if not self.file then
        return true
    end
    local line = json.encode(record, { keyorder = KEY_ORDER }) .. "\n"
    local ok, err = self.file:write(line)
    if ok then
        ok, err = self.file:flush()
    end
    if not ok then
        return nil, "cannot write the journal " .. self.path .. ": " .. tostring(err)
    end
    if record.event then
        fold(self.states, record)
    end
    return true
end

-- Records an event for a row: intent before a call, then done, failed or
-- unknown.  fields may add guide_id, fields, sent, resolved, error, line.
function _M:record(event, action, store_id, userid, fields)
    local record = { time = now(), event = event, action = action, store_id = store_id,
        userid = userid }
    for name, value in pairs(fields or {}) do
        record[name] = value
    end
    return self:write(record)
end

-- Returns the state of a row: { guide_id, sent, pending } or nil.
function _M:state(store_id, userid)
    return self.states[_M.key(store_id, userid)]
end

function _M:close()
    if self.file then
        self.file:close()
        self.file = nil
    end
end

return _M
