-- Progress of a sync on standard error: a bar redrawn in place on a
-- terminal, or one plain line per row otherwise (for logs).
local output = require("wechatpay.cli.output")

local _M = {}
local mt = { __index = _M }

local BAR_WIDTH = 30

-- Creates a progress display.  opts: stream (a file), total (rows),
-- terminal (true to draw a bar), quiet (true to show nothing).
function _M.new(opts)
    return setmetatable({
        stream = opts.stream,
        total = opts.total,
        terminal = opts.terminal,
        quiet = opts.quiet,
        done = 0,
        counts = { registered = 0, updated = 0, unchanged = 0, failed = 0 },
    }, mt)
end

function _M:draw()
    local filled = self.total > 0 and math.floor(BAR_WIDTH * self.done / self.total)
        or BAR_WIDTH
    local c = self.counts
    self.stream:write(string.format("\r[%s%s] %d/%d  registered %d  updated %d  "
        .. "unchanged %d  failed %d\27[K", string.rep("#", filled),
        string.rep("-", BAR_WIDTH - filled), self.done, self.total, c.registered,
        c.updated, c.unchanged, c.failed))
    self.stream:flush()
end

-- Draws the empty bar before the first row.
function _M:start()
    if self.terminal and not self.quiet and self.total > 0 then
        self:draw()
    end
end

-- Reports a finished row: { line, userid, result, guide_id, detail }.
function _M:row(row)
    self.done = self.done + 1
    local counted = row.result:match("^would (%a+)$") or row.result
    local key = ({ register = "registered", update = "updated" })[counted] or counted
    if self.counts[key] then
        self.counts[key] = self.counts[key] + 1
    end
    if self.quiet then
        return
    end
    if self.terminal then
        self:draw()
        return
    end
    local parts = { string.format("sync: line %d userid %s: %s", row.line,
        output.printable(row.userid or "?"), row.result) }
    if row.guide_id then
        parts[#parts + 1] = " " .. row.guide_id
    end
    if row.detail and row.detail ~= "" then
        parts[#parts + 1] = " (" .. output.printable(row.detail) .. ")"
    end
    self.stream:write(table.concat(parts), "\n")
    self.stream:flush()
end

-- Ends the bar's line, so that later output starts on its own line.
function _M:finish()
    if self.terminal and not self.quiet and self.done > 0 then
        self.stream:write("\n")
        self.stream:flush()
    end
end

return _M
