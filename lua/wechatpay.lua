-- lua-wechatpay: a WeChat Pay APIv3 client for Lua 5.4, built around the
-- "Pay as a Service" (支付即服务) staff calls under /v3/smartguide.
--
--   local wechatpay = require("wechatpay")
--   local client, err = wechatpay.new({ mchid = ..., serial_no = ..., ... })
local core = require("wechatpay.core")
local client = require("wechatpay.client")
local errors = require("wechatpay.errors")
local notification = require("wechatpay.notification")
local smartguide = require("wechatpay.smartguide")

local pairs = pairs

-- The staff calls and callback parsing are client methods, next to
-- request().
for _, methods in pairs({ smartguide, notification }) do
    for name, fn in pairs(methods) do
        client[name] = fn
    end
end

return {
    _VERSION = core.VERSION,
    new = client.new,
    -- JSON null in decoded responses and in request bodies.
    null = core.null,
    -- An empty JSON array in request bodies ({} encodes as an object).
    empty_array = core.empty_array,
    -- The metatable of arrays in decoded responses; a table with it
    -- encodes as an array even when empty.
    array_mt = core.array_mt,
    is_error = errors.is_error,
}
