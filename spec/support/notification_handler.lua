-- A callback handler like the README's, for the specs: it listens on
-- 127.0.0.1, passes each request to client:parse_notification, answers
-- 204 for an accepted callback and 401, 400 or 500 by the step that
-- failed, and appends one JSON line per callback to DIR/events.
--
--   lua5.4 spec/support/notification_handler.lua SANDBOX_JSON DIR
--
-- It writes its port to DIR/port once it listens.
local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/../.."
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local core = require("wechatpay.core")
local cqueues = require("cqueues")
local socket = require("cqueues.socket")
local wechatpay = require("wechatpay")

local config_path, dir = arg[1], arg[2]
assert(config_path and dir, "usage: notification_handler.lua SANDBOX_JSON DIR")

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

local config = assert(core.json_decode(read_file(config_path)))
local client = assert(wechatpay.new({
    mchid = config.mchid,
    serial_no = config.serial_no,
    private_key_file = config.private_key_file,
    apiv3_key = config.apiv3_key,
    public_key_file = config.mode ~= "certificate" and config.public_key_file or nil,
    public_key_id = config.mode ~= "certificate" and config.public_key_id or nil,
    base_url = config.base_url,
    ca_file = config.ca_file,
}))

local STATUS_BY_STEP = { verify = 401, parse = 400, decrypt = 500 }

local function record(entry)
    local f = assert(io.open(dir .. "/events", "a"))
    f:write(assert(core.json_encode(entry)), "\n")
    f:close()
end

-- Reads one request: its headers (as sent) and its raw body.
local function read_request(conn)
    local headers, length = {}, 0
    local first = conn:read("*l")
    if not first then
        return nil
    end
    while true do
        local line = conn:read("*l")
        if not line or line == "" or line == "\r" then
            break
        end
        local name, value = line:match("^([^:]+):%s*(.-)\r?$")
        if name then
            headers[name] = value
            if name:lower() == "content-length" then
                length = tonumber(value)
            end
        end
    end
    return headers, length > 0 and conn:read(length) or ""
end

local function handle(conn)
    conn:setmode("b", "b")
    local headers, body = read_request(conn)
    if not headers then
        return
    end
    local event, err = client:parse_notification(headers, body)
    local status = 204
    if event then
        record({ ok = true, id = event.id, event_type = event.event_type,
            resource = event.resource })
    else
        status = STATUS_BY_STEP[err.step] or 500
        record({ ok = false, step = err.step, kind = err.kind, reason = err.reason,
            message = err.message })
    end
    local reply = status == 204 and "" or '{"code":"FAIL","message":"失败"}'
    conn:write(string.format("HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n"
        .. "\r\n%s", status, #reply, reply))
    conn:flush()
    conn:close()
end

local queue = cqueues.new()
local server = socket.listen({ host = "127.0.0.1", port = 0, reuseaddr = true })
server:listen()
local _, _, port = server:localname()
local f = assert(io.open(dir .. "/port.tmp", "w"))
f:write(port)
f:close()
assert(os.rename(dir .. "/port.tmp", dir .. "/port"))

queue:wrap(function()
    for conn in server:clients() do
        queue:wrap(function()
            conn:onerror(function(_, _, code) return code end)
            local ok, err = pcall(handle, conn)
            if not ok then
                io.stderr:write("notification handler: ", tostring(err), "\n")
            end
        end)
    end
end)
assert(queue:loop())
