-- GET /v3/certificates: the platform certificates, each encrypted with
-- AES-256-GCM under the APIv3 key.  In public_key mode the merchant has
-- no platform certificate, and the endpoint returns 404.
local util = require("wechatpay.sandbox.util")

local _M = {}

local ASSOCIATED_DATA = "certificate"

-- Returns the list entry of one certificate, encrypted with a fresh
-- 12-character nonce.
local function encrypted_entry(entry, aead_key)
    local nonce = util.random_alphanumeric(12)
    return {
        serial_no = entry.serial,
        effective_time = util.rfc3339_china(entry.not_before),
        expire_time = util.rfc3339_china(entry.not_after),
        encrypt_certificate = {
            algorithm = "AEAD_AES_256_GCM",
            nonce = nonce,
            associated_data = ASSOCIATED_DATA,
            ciphertext = assert(aead_key:encrypt(nonce, ASSOCIATED_DATA,
                entry.certificate_pem)),
        },
    }
end

local function list_certificates(ctx)
    local keys = ctx.platform.keys
    if not keys:uses_certificates() then
        ctx:fail(404, "RESOURCE_NOT_EXISTS",
            "无可用的平台证书，请在商户平台-API安全申请使用微信支付公钥")
    end
    local data = {}
    for _, entry in ipairs(keys.platform_certificates) do
        data[#data + 1] = encrypted_entry(entry, keys.aead_key)
    end
    return 200, { data = data }
end

-- Adds the endpoint to a platform (platform.lua).
function _M.install(platform)
    platform:add_route("GET", "/v3/certificates", list_certificates)
end

return _M
