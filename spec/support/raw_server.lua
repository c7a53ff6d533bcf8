-- A hostile HTTP server for the specs: it reads each request head (and a
-- Content-Length body), answers with the exact bytes of a file, and
-- closes the connection.  The file is read again for every connection,
-- so a spec can change the answer between calls.
--
-- Usage: lua5.4 spec/support/raw_server.lua RESPONSE_FILE PORT_FILE
-- It listens on 127.0.0.1 on a free port and writes the port number to
-- PORT_FILE once it listens.
local cqueues = require("cqueues")
local socket = require("cqueues.socket")

local response_path, port_path = arg[1], arg[2]
assert(response_path and port_path, "usage: raw_server.lua RESPONSE_FILE PORT_FILE")

local function read_file(path)
    local f = assert(io.open(path, "rb"))
    local data = f:read("a")
    f:close()
    return data
end

local function serve(conn)
    conn:setmode("b", "b")
    local length = 0
    while true do
        local line = conn:read("*l")
        if not line or line == "" or line == "\r" then
            break
        end
        local value = line:lower():match("^content%-length:%s*(%d+)")
        if value then
            length = tonumber(value)
        end
    end
    if length > 0 then
        conn:read(length)
    end
    conn:write(read_file(response_path))
    conn:flush()
    conn:shutdown("w")
    conn:close()
end

local queue = cqueues.new()
local server = socket.listen({ host = "127.0.0.1", port = 0, reuseaddr = true })
server:listen()
local _, _, port = server:localname()
local f = assert(io.open(port_path .. ".tmp", "w"))
f:write(port)
f:close()
assert(os.rename(port_path .. ".tmp", port_path))

queue:wrap(function()
    for conn in server:clients() do
        queue:wrap(function()
            conn:onerror(function(_, _, code) return code end)
            pcall(serve, conn)
        end)
    end
end)
assert(queue:loop())
