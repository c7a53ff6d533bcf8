-- The sandbox's key material: the merchant's key and API certificate,
-- the platform certificates, the WeChat Pay public key, the APIv3 key
-- and, for https, a test CA with a server certificate.  Everything is
-- generated at start and lives only as long as the process.
local core = require("wechatpay.core")
local util = require("wechatpay.sandbox.util")
local openssl_pkey = require("openssl.pkey")

local _M = {}
local mt = { __index = _M }

local DAY = 86400
-- Merchant API and platform certificates are valid for five years.
local CERTIFICATE_LIFETIME = 5 * 365 * DAY
_M.CERTIFICATE_LIFETIME = CERTIFICATE_LIFETIME
-- 9999-12-31T23:59:59Z, the latest time an X.509 validity can hold.
_M.MAX_CERTIFICATE_TIME = 253402300799
local KEY_BITS = 2048

local MODES = { certificate = true, public_key = true, both = true }

-- Generates a private key and returns it as PEM and as a loaded key.
local function new_key()
    local pem = assert(core.generate_test_key(KEY_BITS))
    return pem, assert(core.load_private_key(pem))
end

local function issue(spec)
    local pem, err = core.issue_test_certificate(spec)
    if not pem then
        error("cannot issue the test certificate " .. spec.common_name .. ": " .. err)
    end
    return pem, assert(core.load_certificate(pem))
end

-- Creates the test CA that issues every other sandbox certificate.
local function new_authority(now)
    local key_pem = new_key()
    local certificate_pem = issue({
        key = key_pem,
        serial = util.random_serial(40),
        common_name = "lua-wechatpay sandbox test CA",
        not_before = now - DAY,
        not_after = now + CERTIFICATE_LIFETIME,
        ca = true,
    })
    return { key_pem = key_pem, certificate_pem = certificate_pem }
end

-- Returns a certificate entry: serial, key, certificate (PEM and loaded),
-- public_key and the validity period in Unix seconds.
local function new_certificate(authority, common_name, not_before, not_after)
    local key_pem, key = new_key()
    local certificate_pem, certificate = issue({
        key = key_pem,
        serial = util.random_serial(40),
        common_name = common_name,
        not_before = not_before,
        not_after = not_after,
        issuer_key = authority.key_pem,
        issuer_certificate = authority.certificate_pem,
    })
    return {
        serial = certificate:serial(),
        key_pem = key_pem,
        key = key,
        certificate_pem = certificate_pem,
        public_key = certificate:public_key(),
        not_before = certificate:not_before(),
        not_after = certificate:not_after(),
    }
end

-- Returns the PEM ("PUBLIC KEY", SubjectPublicKeyInfo) of the public half
-- of a private key.  The core exports no key PEM, so luaossl does this.
local function public_key_pem(key_pem)
    return openssl_pkey.new(key_pem):toPEM("public")
end

local function new_tls_identity(authority, now)
    local key_pem = new_key()
    local certificate_pem = issue({
        key = key_pem,
        serial = util.random_serial(40),
        common_name = "localhost",
        not_before = now - DAY,
        not_after = now + CERTIFICATE_LIFETIME,
        issuer_key = authority.key_pem,
        issuer_certificate = authority.certificate_pem,
        dns = "localhost",
        ip = "127.0.0.1",
    })
    return {
        ca_pem = authority.certificate_pem,
        key_pem = key_pem,
        certificate_pem = certificate_pem,
    }
end

-- Generates all key material.  opts: mode ("certificate", "public_key"
-- or "both"), tls (boolean), mchid, platform_not_after (the expiry of the
-- first platform certificate in Unix seconds; default five years from
-- now).  Takes about half a second, most of it in RSA key generation.
function _M.generate(opts)
    local mode = opts.mode or "certificate"
    if not MODES[mode] then
        return nil, "unknown mode " .. tostring(mode)
            .. "; expected certificate, public_key or both"
    end
    local now = os.time()
    local authority = new_authority(now)
    local self = setmetatable({ mode = mode, authority = authority }, mt)

    self.merchant = new_certificate(authority, "lua-wechatpay sandbox merchant "
        .. tostring(opts.mchid), now - DAY, now + CERTIFICATE_LIFETIME)
    -- Every certificate in platform_certificates is published by
    -- /v3/certificates, and responses are signed with signing_certificate.
    -- A rotation adds an entry first, switches signing_certificate later
    -- and then removes the old entry.
    self.initial_certificate = new_certificate(authority, "lua-wechatpay sandbox platform",
        now - DAY, opts.platform_not_after or now + CERTIFICATE_LIFETIME)
    self.issued_platform_certificates = 1
    self:reset_platform_certificates()

    local public_key_private_pem, public_key_private = new_key()
    local pem = public_key_pem(public_key_private_pem)
    self.wechatpay_public_key = {
        id = "PUB_KEY_ID_" .. util.random_digits(28),
        key = public_key_private,
        pem = pem,
        public_key = assert(core.load_public_key(pem)),
    }

    self.apiv3_key = util.random_alphanumeric(32)
    self.aead_key = assert(core.new_aead_key(self.apiv3_key))
    if opts.tls then
        self.tls = new_tls_identity(authority, now)
    end
    return self
end

-- Returns true when the mode publishes platform certificates.
function _M:uses_certificates()
    return self.mode ~= "public_key"
end

-- Returns true when the mode offers the WeChat Pay public key.
function _M:uses_public_key()
    return self.mode ~= "certificate"
end

-- Publishes the certificate created at start as the only one, and signs
-- with it.
function _M:reset_platform_certificates()
    self.platform_certificates = { self.initial_certificate }
    self.signing_certificate = self.initial_certificate
end

-- Issues a platform certificate with a new key and a random serial, valid
-- from not_before to not_after (Unix seconds), and publishes it after the
-- others, not yet signing.  Returns the entry.  RSA key generation takes
-- about 0.1 s, during which the event loop serves no one else.
function _M:publish_platform_certificate(not_before, not_after)
    self.issued_platform_certificates = self.issued_platform_certificates + 1
    local entry = new_certificate(self.authority, "lua-wechatpay sandbox platform "
        .. self.issued_platform_certificates, not_before, not_after)
    self.platform_certificates[#self.platform_certificates + 1] = entry
    return entry
end

-- Removes a published certificate.  The caller checks that it does not
-- sign.  Returns true, or nil when no published certificate has serial.
function _M:withdraw_platform_certificate(serial)
    for i, entry in ipairs(self.platform_certificates) do
        if entry.serial == serial then
            table.remove(self.platform_certificates, i)
            return true
        end
    end
    return nil
end

function _M:find_platform_certificate(serial)
    for _, entry in ipairs(self.platform_certificates) do
        if entry.serial == serial then
            return entry
        end
    end
    return nil
end

-- Looks up the key that a Wechatpay-Serial request header names, among
-- those this mode offers.  Returns the entry ({ serial, key,
-- public_key }) or nil.
function _M:find_platform_key(serial)
    if not serial then
        return nil
    end
    if self:uses_public_key() and serial == self.wechatpay_public_key.id then
        local entry = self.wechatpay_public_key
        return { serial = entry.id, key = entry.key, public_key = entry.public_key }
    end
    if self:uses_certificates() then
        return self:find_platform_certificate(serial)
    end
    return nil
end

-- Returns the serial and private key that sign a response, given the
-- request's Wechatpay-Serial: in both mode the public key signs when the
-- request names its ID, and the platform certificate otherwise.
function _M:response_signer(request_serial)
    local public = self.wechatpay_public_key
    if self.mode == "public_key"
        or (self.mode == "both" and request_serial == public.id) then
        return public.id, public.key
    end
    return self.signing_certificate.serial, self.signing_certificate.key
end

-- Returns the serial and private key that sign callbacks: with the
-- signing platform certificate when sign_with is "certificate", with the
-- WeChat Pay public key's private half when it is "public_key".
function _M:callback_signer(sign_with)
    if sign_with == "public_key" then
        return self.wechatpay_public_key.id, self.wechatpay_public_key.key
    end
    return self.signing_certificate.serial, self.signing_certificate.key
end

-- Returns a private key unrelated to every published key, for the
-- wrong_key fault.  Generated on first use (about 0.1 s) and kept.
function _M:stray_key()
    if not self.stray then
        local _, key = new_key()
        self.stray = key
    end
    return self.stray
end

-- Writes the key files into dir and returns their paths.
function _M:write_files(dir)
    local paths = {
        private_key_file = dir .. "/merchant_test_key.pem",
        certificate_file = dir .. "/merchant_test_cert.pem",
        public_key_file = dir .. "/wechatpay_public_key_test.pem",
    }
    local ok, err = util.write_file(paths.private_key_file, self.merchant.key_pem, true)
    if ok then
        ok, err = util.write_file(paths.certificate_file, self.merchant.certificate_pem)
    end
    if ok then
        ok, err = util.write_file(paths.public_key_file, self.wechatpay_public_key.pem)
    end
    if ok and self.tls then
        paths.ca_file = dir .. "/ca_test_cert.pem"
        ok, err = util.write_file(paths.ca_file, self.tls.ca_pem)
    end
    if not ok then
        return nil, err
    end
    return paths
end

return _M
