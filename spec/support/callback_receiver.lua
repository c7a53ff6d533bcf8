-- A callback receiver for the sandbox specs: it listens on 127.0.0.1,
-- records each request to a file and responds to every request with the
-- same status.  Its HTTP parsing is separate from the sandbox's, so that the
-- specs check the sandbox's client against an independent server.
--
--   lua5.4 spec/support/callback_receiver.lua --dir DIR [--status 200]
--       [--delay SECONDS] [--parent-pid PID]
--
-- It writes its port to DIR/port once it listens, and request N (from 1)
-- to DIR/request-N.json as {method, target, head (the raw head),
-- headers (lower-case names), body}.  It exits when process PID is gone.
local script_dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = script_dir .. "/../.."
package.path = root .. "/lua/?.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local core = require("wechatpay.core")
local cqueues = require("cqueues")
local socket = require("cqueues.socket")

local MAX_HEAD_BYTES = 16 * 1024
local READ_TIMEOUT = 10
local PARENT_CHECK_INTERVAL = 0.5

local function parse_arguments(argv)
    local options = { status = 200, delay = 0 }
    for i = 1, #argv, 2 do
        local name, value = argv[i], argv[i + 1]
        if name == "--dir" then
            options.dir = value
        elseif name == "--status" then
            options.status = math.tointeger(tonumber(value))
        elseif name == "--delay" then
            options.delay = tonumber(value)
        elseif name == "--parent-pid" then
            options.parent_pid = value
        else
            error("unknown option " .. tostring(name))
        end
    end
    assert(options.dir, "--dir is required")
    assert(options.status, "--status must be an integer")
    return options
end

local function write_atomic(path, data)
    local f = assert(io.open(path .. ".tmp", "wb"))
    f:write(data)
    f:close()
    assert(os.rename(path .. ".tmp", path))
end

local function process_alive(pid)
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if not f then
        return false
    end
    local stat = f:read("a")
    f:close()
    return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- Reads one request.  Returns method, target, head, headers and body, or
-- nil when the connection ends first.
local function read_request(con)
    local buffer = ""
    local head_end, body_start
    repeat
        local data = con:xread(-4096, "b", READ_TIMEOUT)
        if not data then
            return nil
        end
        buffer = buffer .. data
        head_end, body_start = buffer:find("\r\n\r\n", 1, true)
    until head_end or #buffer > MAX_HEAD_BYTES
    if not head_end then
        return nil
    end
    local head = buffer:sub(1, head_end - 1)
    local method, target = head:match("^(%S+) (%S+) HTTP/1%.1\r\n")
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+): ([^\r\n]*)") do
        headers[name:lower()] = value
    end
    local body = buffer:sub(body_start + 1)
    local length = tonumber(headers["content-length"] or "0")
    while #body < length do
        local data = con:xread(-4096, "b", READ_TIMEOUT)
        if not data then
            return nil
        end
        body = body .. data
    end
    return method, target, head, headers, body
end

local function response_text(status)
    local body = status < 300 and '{"code":"SUCCESS","message":"成功"}'
        or '{"code":"FAIL","message":"失败"}'
    return "HTTP/1.1 " .. status .. " Receiver\r\nContent-Type: application/json\r\n"
        .. "Content-Length: " .. #body .. "\r\nConnection: close\r\n\r\n" .. body
end

local function main(argv)
    local options = parse_arguments(argv)
    local listener = socket.listen({ host = "127.0.0.1", port = 0, reuseaddr = true })
    assert(listener:listen())
    local _, _, port = listener:localname()
    write_atomic(options.dir .. "/port", tostring(port))

    local cq = cqueues.new()
    local count = 0
    cq:wrap(function()
        while true do
            local con = listener:accept()
            cq:wrap(function()
                con:onerror(function(_, _, err)
                    return err
                end)
                con:setmode("b", "bn")
                local method, target, head, headers, body = read_request(con)
                if method then
                    count = count + 1
                    local record = assert(core.json_encode({ method = method, target = target,
                        head = head, headers = headers, body = body }))
                    write_atomic(options.dir .. "/request-" .. count .. ".json", record)
                    if options.delay > 0 then
                        cqueues.sleep(options.delay)
                    end
                    con:xwrite(response_text(options.status), "bn", READ_TIMEOUT)
                end
                con:close()
            end)
        end
    end)
    if options.parent_pid then
        cq:wrap(function()
            while process_alive(options.parent_pid) do
                cqueues.sleep(PARENT_CHECK_INTERVAL)
            end
            os.exit(0)
        end)
    end
    assert(cq:loop())
end

main({ ... })
