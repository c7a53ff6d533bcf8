-- Measures the client's CPU time per call against a running sandbox, next
-- to the floor: the RSA-2048 operations that call cannot avoid, timed in
-- the same process with the same OpenSSL (through wechatpay.core).
--
--   lua5.4 bench/client_cpu.lua SANDBOX_JSON [ROUNDS] [CALLS_PER_ROUND]
--
-- Each round times a block of every primitive (sign, verify, OAEP
-- encrypt, OAEP decrypt) and then a block of every call, so that drift in
-- the machine's speed touches both sides alike.  The calls:
--   assign         guide:assign, keep-alive connection (floor: sign + verify)
--   query          query_guides by mobile, one guide returned
--                  (floor: sign + verify + 1 encrypt + 2 decrypt)
--   register       register_guide, a new connection by design
--                  (floor: sign + verify + 2 encrypt)
--   assign_fresh   the assign request through client:request with
--                  idempotent = false, so on a new connection: minus
--                  assign_keepalive, it is the cost of a new connection
--   assign_keepalive  the same request with idempotent = true
--   bare_http      an assign request signed before the timing starts, sent
--                  with wechatpay.core's HTTP client on a keep-alive
--                  connection and not verified: libcurl and the kernel
--                  alone, the transport's share of a call
--   replay         guide:assign through a transport that returns a response
--                  recorded from the sandbox: the whole client (sign,
--                  verify, JSON, Lua) without the network
--   assign_fresh_bundle  with --tls only: assign_fresh from a client whose
--                  ca_file is the system CA bundle plus the sandbox's CA,
--                  as a client of the real platform has by default;
--                  fewer calls per round, because each costs milliseconds
-- Prints one RESULT line (benchlib.emit): seconds of CPU per operation and
-- per call, and each call's ratio to its floor, as medians over rounds.
local benchlib = require("benchlib")
local core = require("wechatpay.core")
local wechatpay = require("wechatpay")

local cpu = benchlib.cpu

local config_path = assert(arg[1], "usage: client_cpu.lua SANDBOX_JSON [ROUNDS] [CALLS]")
local rounds = tonumber(arg[2]) or 10
local calls_per_round = tonumber(arg[3]) or 100
-- Primitive operations per round and kind; sign and decrypt take about
-- 0.3 ms each on current x86 cores, verify and encrypt about 0.02 ms.
local PRIMITIVES_PER_ROUND = 100

local config = benchlib.load_sandbox(config_path)
local STORE_ID = 1234
-- A run id keeps userids, order numbers and the mobile that query looks
-- for unique across runs against the same sandbox.
local run_id = string.format("%x", os.time() % 0xFFFFFF) .. benchlib.own_pid()
math.randomseed(os.time(), tonumber(benchlib.own_pid()))
local QUERY_MOBILE = string.format("137%08d", math.random(0, 99999999))

local client = assert(wechatpay.new(benchlib.client_options(config)))

-- The primitives.  Every public-key operation uses the merchant
-- certificate's key, which is RSA-2048 with exponent 65537 like the WeChat
-- Pay public key and the platform certificates.  Its private half is here,
-- so verify checks a real signature and decrypt a real ciphertext.
local private_key = assert(core.load_private_key(benchlib.read_file(config.private_key_file)))
local public_key = assert(core.load_certificate(
    benchlib.read_file(config.certificate_file))):public_key()
-- A request message of typical length: method, path, timestamp, nonce
-- and a short JSON body.
local MESSAGE = "POST\n/v3/smartguide/guides/LLA0123456789abcdefghijklmnopqrstu/assign\n"
    .. "1700000000\n0123456789ABCDEF0123456789ABCDEF\n"
    .. '{"out_trade_no":"BENCH-0000000000"}\n'
local SIGNATURE = assert(private_key:sign(MESSAGE))
local CIPHERTEXT = assert(public_key:encrypt(QUERY_MOBILE))

local primitives = {
    sign = function() return private_key:sign(MESSAGE) end,
    verify = function() return public_key:verify(MESSAGE, SIGNATURE) end,
    encrypt = function() return public_key:encrypt(QUERY_MOBILE) end,
    decrypt = function() return private_key:decrypt(CIPHERTEXT) end,
}
local PRIMITIVE_ORDER = { "sign", "verify", "encrypt", "decrypt" }

-- The guide that assign and query use, registered once before timing.
local guide = assert(client:register_guide({
    store_id = STORE_ID, corpid = "wwbench", userid = "bench-query-" .. run_id,
    name = "张三", mobile = QUERY_MOBILE,
    qr_code = "https://example.com/qr/" .. run_id, avatar = "https://example.com/a.png",
}))
local assign_path = "/v3/smartguide/guides/" .. guide.guide_id .. "/assign"

local counter = 0
local function next_id()
    counter = counter + 1
    return run_id .. "-" .. counter
end

local calls = {
    assign = function()
        return assert(guide:assign("B" .. next_id()))
    end,
    query = function()
        local page = assert(client:query_guides({ store_id = STORE_ID, mobile = QUERY_MOBILE }))
        assert(#page.data == 1, "query by mobile returned " .. #page.data .. " guides")
        return page
    end,
    register = function()
        local id = next_id()
        return assert(client:register_guide({
            store_id = STORE_ID, corpid = "wwbench", userid = "bench-" .. id, name = "李四",
            mobile = string.format("139%08d", counter),
            qr_code = "https://example.com/qr/" .. id, avatar = "https://example.com/a.png",
        }))
    end,
    assign_fresh = function()
        return assert(client:request("POST", assign_path, {
            body = { out_trade_no = "F" .. next_id() }, idempotent = false,
        }))
    end,
    assign_keepalive = function()
        return assert(client:request("POST", assign_path, {
            body = { out_trade_no = "K" .. next_id() }, idempotent = true,
        }))
    end,
}
-- The transport's share: requests signed in advance, one per timed call
-- (the sandbox rejects a repeated nonce), sent without verification.
local http = assert(core.new_http({ timeout = 10, ca_file = config.ca_file,
    user_agent = "lua-wechatpay-bench" }))
local presigned = {}
local function presign(count)
    local timestamp = os.time()
    for i = 1, count do
        local body = '{"out_trade_no":"H' .. next_id() .. '"}'
        local headers = {
            "Authorization: " .. assert(core.authorization(private_key, config.mchid,
                config.serial_no, "POST", assign_path, body, timestamp)),
            "Accept: application/json",
            "Content-Type: application/json",
        }
        if config.public_key_id and config.mode ~= "certificate" then
            headers[#headers + 1] = "Wechatpay-Serial: " .. config.public_key_id
        end
        presigned[#presigned + 1] = { body = body, headers = headers }
    end
end
local presigned_next = 0
calls.bare_http = function()
    presigned_next = presigned_next + 1
    local request = presigned[presigned_next]
    local res = assert(http:request("POST", config.base_url .. assign_path, request.headers,
        request.body))
    assert(res.status == 204, "pre-signed assign returned " .. res.status)
end

-- The client without the network: one real assign response, recorded
-- through the same HTTP client, is returned to every call.  The client
-- checks the response's timestamp, not its nonce, so the recording stays
-- valid for the five-minute window, longer than a run.
local recorded
local recording_options = benchlib.client_options(config)
recording_options.transport = function(req)
    local res, code, message = http:request(req.method, req.url, req.headers, req.body)
    if not res then
        return nil, tostring(code) .. ": " .. tostring(message)
    end
    recorded = res
    return res
end
local recorder = assert(wechatpay.new(recording_options))
assert(assert(recorder:guide(guide.guide_id)):assign("R" .. next_id()))
recorder:close()
local replay_options = benchlib.client_options(config)
replay_options.transport = function()
    return recorded
end
local replay_client = assert(wechatpay.new(replay_options))
local replay_guide = assert(replay_client:guide(guide.guide_id))
calls.replay = function()
    return assert(replay_guide:assign("P" .. next_id()))
end

local CALL_ORDER = { "assign", "query", "register", "assign_fresh", "assign_keepalive",
    "bare_http", "replay" }
-- Calls per round where it is not calls_per_round.
local CALL_COUNTS = {}

-- The system CA bundle that libcurl reads by default on Debian.
local SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
local bundle_client, bundle_path
if config.ca_file and benchlib.exists(SYSTEM_BUNDLE) then
    bundle_path = config_path:gsub("[^/]*$", "") .. "ca-bundle-" .. run_id .. ".pem"
    benchlib.write_file(bundle_path, benchlib.read_file(config.ca_file)
        .. benchlib.read_file(SYSTEM_BUNDLE))
    local bundle_options = benchlib.client_options(config)
    bundle_options.ca_file = bundle_path
    bundle_client = assert(wechatpay.new(bundle_options))
    calls.assign_fresh_bundle = function()
        return assert(bundle_client:request("POST", assign_path, {
            body = { out_trade_no = "C" .. next_id() }, idempotent = false,
        }))
    end
    CALL_ORDER[#CALL_ORDER + 1] = "assign_fresh_bundle"
    CALL_COUNTS.assign_fresh_bundle = 5
end
presign(5 + rounds * calls_per_round)

-- Returns the CPU seconds that n runs of fn take.
local function time_block(fn, n)
    local started = cpu()
    for _ = 1, n do
        fn()
    end
    return cpu() - started
end

-- Warm up: connection, certificate download (certificate mode), caches.
for _, name in ipairs(CALL_ORDER) do
    for _ = 1, math.min(5, CALL_COUNTS[name] or 5) do
        calls[name]()
    end
end
for _, name in ipairs(PRIMITIVE_ORDER) do
    time_block(primitives[name], 5)
end

-- Per-round costs in seconds: primitives per operation, calls per call,
-- and each call's ratio to the floor of the same round.
local costs, ratios = {}, {}
for _, name in ipairs(PRIMITIVE_ORDER) do
    costs[name] = {}
end
for _, name in ipairs(CALL_ORDER) do
    costs[name] = {}
    ratios[name] = {}
end

-- The floor of each call, in seconds, from per-operation costs.  The
-- calls that are parts of assign (bare_http, replay, assign_fresh,
-- assign_keepalive) are compared with the floor of assign.
local function floors(cost)
    local sign_verify = cost.sign + cost.verify
    return {
        assign = sign_verify,
        query = sign_verify + cost.encrypt + 2 * cost.decrypt,
        register = sign_verify + 2 * cost.encrypt,
    }
end

for _ = 1, rounds do
    local cost = {}
    for _, name in ipairs(PRIMITIVE_ORDER) do
        cost[name] = time_block(primitives[name], PRIMITIVES_PER_ROUND) / PRIMITIVES_PER_ROUND
        table.insert(costs[name], cost[name])
    end
    local floor = floors(cost)
    for _, name in ipairs(CALL_ORDER) do
        local count = CALL_COUNTS[name] or calls_per_round
        local per_call = time_block(calls[name], count) / count
        table.insert(costs[name], per_call)
        table.insert(ratios[name], per_call / (floor[name] or floor.assign))
    end
end

-- The median resists the bursts of load that other processes put on a
-- shared machine better than the mean.
local function median(list)
    local sorted = table.move(list, 1, #list, 1, {})
    table.sort(sorted)
    local middle = (#sorted + 1) // 2
    if #sorted % 2 == 1 then
        return sorted[middle]
    end
    return (sorted[middle] + sorted[middle + 1]) / 2
end

local primitive_cost, call_cost, call_ratio = {}, {}, {}
for _, name in ipairs(PRIMITIVE_ORDER) do
    primitive_cost[name] = median(costs[name])
end
for _, name in ipairs(CALL_ORDER) do
    call_cost[name] = median(costs[name])
    call_ratio[name] = median(ratios[name])
end

client:close()
replay_client:close()
if bundle_client then
    bundle_client:close()
    os.remove(bundle_path)
end
benchlib.emit({
    kind = "client_cpu",
    mode = config.mode,
    base_url = config.base_url,
    rounds = rounds,
    calls_per_round = calls_per_round,
    call_counts = CALL_COUNTS,
    bundle_certificates = bundle_client and select(2, benchlib.read_file(SYSTEM_BUNDLE)
        :gsub("BEGIN CERTIFICATE", "")) or nil,
    primitive = primitive_cost,
    floor = floors(primitive_cost),
    call = call_cost,
    ratio = call_ratio,
})
