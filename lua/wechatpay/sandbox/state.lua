-- In-memory data of the emulated platform: stores, staff (guides),
-- order assignments, the clock skew, the nonces of recent requests and
-- a log of the last requests.  Nothing is written to disk.
local cqueues = require("cqueues")

local monotime = cqueues.monotime

local _M = {}
local mt = { __index = _M }

-- A nonce may not come back within this many seconds (the platform's
-- five-minute request window).
local NONCE_WINDOW = 300
local REQUEST_LOG_SIZE = 100

-- Creates the state.  store_ids: the store IDs that exist at start and
-- after every reset.
function _M.new(store_ids)
    local self = setmetatable({ initial_store_ids = store_ids or {} }, mt)
    self:reset()
    return self
end

-- Forgets staff, assignments, the clock skew, recent nonces and the
-- request log, and restores the initial stores.
function _M:reset()
    self.stores = {}
    for _, id in ipairs(self.initial_store_ids) do
        self.stores[id] = true
    end
    self.guides = {}
    self.guides_by_id = {}
    self.assignments = {}
    self.assignment_index = {}
    self.clock_skew = 0
    self.nonces = {}
    self.nonce_queue = {}
    self.nonce_head = 1
    self.nonce_tail = 0
    self.request_log = {}
    self.request_log_next = 1
end

-- Returns the sandbox clock in Unix seconds: the system clock shifted by
-- the skew that POST /sandbox/clock sets.
function _M:now()
    return os.time() + self.clock_skew
end

function _M:add_store(store_id)
    self.stores[store_id] = true
end

function _M:has_store(store_id)
    return self.stores[store_id] == true
end

function _M:store_ids()
    local ids = {}
    for id in pairs(self.stores) do
        ids[#ids + 1] = id
    end
    table.sort(ids)
    return ids
end

-- Adds a guide record: { guide_id, store_id, scope, name, mobile,
-- userid?, work_id?, corpid?, qr_code?, avatar?, group_qrcode? }.  The
-- scope is the sub-merchant ID or "" for the merchant itself.
function _M:add_guide(guide)
    self.guides[#self.guides + 1] = guide
    self.guides_by_id[guide.guide_id] = guide
end

function _M:find_guide(guide_id)
    return self.guides_by_id[guide_id]
end

-- Returns the guides of one store and scope that pass filter, in the
-- order they were registered.
function _M:select_guides(store_id, scope, filter)
    local found = {}
    for _, guide in ipairs(self.guides) do
        if guide.store_id == store_id and guide.scope == scope and filter(guide) then
            found[#found + 1] = guide
        end
    end
    return found
end

-- Records that an order is served by a guide.  Assigning the same order
-- again replaces its guide, since an order has one guide.
function _M:assign(guide_id, out_trade_no, scope)
    local key = scope .. "\0" .. out_trade_no
    local existing = self.assignment_index[key]
    if existing then
        existing.guide_id = guide_id
        return
    end
    local record = { guide_id = guide_id, out_trade_no = out_trade_no }
    if scope ~= "" then
        record.sub_mchid = scope
    end
    self.assignments[#self.assignments + 1] = record
    self.assignment_index[key] = record
end

-- Drops nonces older than the window.  Nonces are queued in arrival
-- order, so the oldest are at the head.
function _M:expire_nonces(now)
    local queue = self.nonce_queue
    local head = self.nonce_head
    while queue[head] and queue[head].at <= now - NONCE_WINDOW do
        self.nonces[queue[head].nonce] = nil
        queue[head] = nil
        head = head + 1
    end
    self.nonce_head = head
end

-- Returns true when the nonce was used within the window.  Uses the
-- monotonic clock, so the clock skew does not move the window.
function _M:nonce_seen(nonce)
    self:expire_nonces(monotime())
    return self.nonces[nonce] ~= nil
end

function _M:remember_nonce(nonce)
    local now = monotime()
    self.nonces[nonce] = now
    self.nonce_tail = self.nonce_tail + 1
    self.nonce_queue[self.nonce_tail] = { nonce = nonce, at = now }
end

-- Appends an entry to the request log, which keeps the last 100.
function _M:log_request(entry)
    local index = self.request_log_next
    self.request_log[index] = entry
    self.request_log_next = index % REQUEST_LOG_SIZE + 1
end

-- Returns the logged requests, oldest first.
function _M:logged_requests()
    local list = {}
    local start = self.request_log_next
    for i = 0, REQUEST_LOG_SIZE - 1 do
        local entry = self.request_log[(start - 1 + i) % REQUEST_LOG_SIZE + 1]
        if entry then
            list[#list + 1] = entry
        end
    end
    return list
end

return _M
